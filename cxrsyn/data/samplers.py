"""A sampler that shards across DDP ranks and whose order depends only on (seed, epoch).

Lightning's default sampler wrapping draws from global RNG state, which a resumed run does not restore, and
pads ranks with duplicate samples that then count twice in metrics. This sampler yields ``(index, epoch)``
pairs so the dataset can seed each sample's augmentation from its coordinates; evaluation code removes the
padding duplicates by index.

The epoch comes from ``epoch_source`` when given (the DataModule passes the fit loop's epoch counter, read
at iteration time): after resuming from an end-of-epoch checkpoint, Lightning 2.x calls ``set_epoch`` with
the previous epoch's number, which would replay that epoch's order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import Sampler

from cxrsyn.core.seeding import derive_seed


def distributed_rank_and_size() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class EpochSampler(Sampler[tuple[int, int]]):
    def __init__(
        self, size: int, shuffle: bool, seed: int = 0, epoch_source: Callable[[], int] | None = None
    ):
        self.size = size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch_source = epoch_source
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self._epoch = epoch

    @property
    def epoch(self) -> int:
        return self.epoch_source() if self.epoch_source is not None else self._epoch

    def __len__(self) -> int:
        _, world = distributed_rank_and_size()
        return math.ceil(self.size / world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rank, world = distributed_rank_and_size()
        epoch = self.epoch
        if self.shuffle:
            order = np.random.default_rng(derive_seed(self.seed, epoch)).permutation(self.size)
        else:
            order = np.arange(self.size)
        per_rank = math.ceil(self.size / world)
        padded = np.resize(order, per_rank * world)  # repeats from the start: every rank gets per_rank items
        for index in padded[rank::world]:
            yield int(index), epoch
