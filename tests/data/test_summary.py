"""``verify`` asks the source's reader for its published counts: a new reader needs no change elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from cxrsyn.data.sources import PhantomFolder, PublishedCounts
from cxrsyn.data.summary import summarize, verify
from cxrsyn.phantom.simulator import write_phantom_dataset


@dataclass
class CountedPhantom(PhantomFolder):
    """A reader that states what was published for its selection (here: two images per class)."""

    published_n_pos: int = 2

    def published_counts(self) -> PublishedCounts:
        counts = {"n": 2 + self.published_n_pos, "n_pos": self.published_n_pos, "n_neg": 2}
        return PublishedCounts({"all": counts}, "two per class, by construction")


def test_verify_compares_with_the_counts_the_reader_publishes(tmp_path):
    source = CountedPhantom(root=str(tmp_path / "phantom"), n_per_class=2, image_size=32)
    write_phantom_dataset(source.root, source.spec(), show_progress=False, workers=1)  # no worker start-up
    summary = summarize(source, source.index())
    assert verify(source, summary) == {
        "matches": True,
        "reference": "two per class, by construction",
        "differences": [],
    }
    wrong = CountedPhantom(root=source.root, n_per_class=2, image_size=32, published_n_pos=3)
    assert verify(wrong, summary)["differences"] == [
        {"part": "all", "count": "n", "expected": 5, "found": 4},
        {"part": "all", "count": "n_pos", "expected": 3, "found": 2},
    ]
    plain = PhantomFolder(root=source.root, n_per_class=2, image_size=32)
    assert verify(plain, summary)["matches"] is None
