from collections import Counter

from cxrsyn.phantom.grid import DEFAULT_ATTRIBUTES, AttributeGrid


def test_counts_per_class_and_attribute_balance():
    cells = AttributeGrid().sample(150, seed=0)
    assert Counter(cell.label for cell in cells) == {1: 150, 0: 150}
    for name, values in DEFAULT_ATTRIBUTES.items():
        counts = Counter(cell.attributes[name] for cell in cells if cell.label == 1)
        assert set(counts) == set(values)
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_partial_pass_stays_balanced():
    cells = AttributeGrid().sample(7, seed=3)  # fewer than the 36 cells of the grid
    for name in DEFAULT_ATTRIBUTES:
        counts = Counter(cell.attributes[name] for cell in cells if cell.label == 0)
        assert max(counts.values()) - min(counts.values()) <= 1, (name, counts)


def test_both_classes_get_the_same_attribute_mix():
    cells = AttributeGrid().sample(40, seed=1)
    positive = sorted(tuple(sorted(c.attributes.items())) for c in cells if c.label == 1)
    negative = sorted(tuple(sorted(c.attributes.items())) for c in cells if c.label == 0)
    assert positive == negative


def test_deterministic_for_a_seed_and_different_across_seeds():
    first, again, other = (AttributeGrid().sample(20, seed=s) for s in (5, 5, 6))
    assert first == again
    assert [c.seed for c in first] != [c.seed for c in other]
    assert len({c.seed for c in first}) == len(first)
