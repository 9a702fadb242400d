"""Seeds derived from a run seed and a position (epoch, sample index, rank), independent of call order.

Deriving every random stream from its coordinates, instead of drawing from one global stream, is what makes
a resumed run or a run on more workers produce the same numbers as an uninterrupted single-process run.
"""

from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 31-bit seed that depends only on ``parts``."""
    return int(np.random.SeedSequence([int(part) & 0xFFFFFFFF for part in parts]).generate_state(1)[0] >> 1)
