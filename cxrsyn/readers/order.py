"""Each reader's case order, as the page computes it (page/app.js, ``readerOrder``): a Fisher-Yates shuffle of
the study's case ids (in the order the page lists them) driven by mulberry32, seeded with the 32-bit FNV-1a
hash of ``"<seed>:<reader id>"`` (UTF-8). Deterministic: the same study seed and reader id give the same order
in the browser and here, so the score can check an exported order and the simulated readers use the page's."""

from __future__ import annotations

from collections.abc import Sequence

MASK = 0xFFFFFFFF


def fnv1a(text: str) -> int:
    value = 0x811C9DC5
    for byte in text.encode("utf-8"):
        value = ((value ^ byte) * 0x01000193) & MASK
    return value


def mulberry32(seed: int):
    state = seed & MASK

    def draw() -> float:
        nonlocal state
        state = (state + 0x6D2B79F5) & MASK
        t = state
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & MASK
        return ((t ^ (t >> 14)) & MASK) / 4294967296

    return draw


def _imul(a: int, b: int) -> int:
    """JavaScript's Math.imul, as an unsigned 32-bit value."""
    return (a * b) & MASK


def reader_order(case_ids: Sequence[str], seed: int, reader: str) -> list[str]:
    ids = list(case_ids)
    draw = mulberry32(fnv1a(f"{seed}:{reader}"))
    for i in range(len(ids) - 1, 0, -1):
        j = int(draw() * (i + 1))
        ids[i], ids[j] = ids[j], ids[i]
    return ids
