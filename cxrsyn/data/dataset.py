"""A torch Dataset over a table of samples (``file``, ``label``; ``cache_file`` and ``cache_row`` for samples
read from the decode-once cache)."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from cxrsyn.core.manifest import LABEL_COLUMN
from cxrsyn.core.seeding import derive_seed
from cxrsyn.data.cache import (
    CACHE_FILE_COLUMN,
    CACHE_ROW_COLUMN,
    SOURCE_HEIGHT_COLUMN,
    SOURCE_WIDTH_COLUMN,
    cached_image,
)
from cxrsyn.data.images import DeepWindow, read_grayscale
from cxrsyn.data.sources import FILE_COLUMN


class ImageTableDataset(Dataset):
    """Items are dicts: ``image`` (1xHxW float in [0, 1]), ``label`` (float 0/1), ``index`` (row number),
    ``source_size`` (height and width of the stored image before crop and resize).

    Keys may be plain indices or ``(index, epoch)`` pairs from ``EpochSampler``; with a pair, the
    augmentation is seeded from (seed, epoch, index), so it is the same whatever worker draws it and
    whether or not the run was resumed.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        transforms: Sequence[A.Compose],
        transform_ids: Sequence[int] | None = None,
        seed: int = 0,
        windows: Sequence[DeepWindow] | None = None,
    ):
        """``transform_ids[i]`` picks row i's transform (rows from several sources may crop differently) and,
        for images read from their files, its source's ``windows`` entry (how 16-bit pixels become [0, 1])."""
        self.files = table[FILE_COLUMN].tolist()
        cached = CACHE_FILE_COLUMN in table.columns
        self.cache_files = table[CACHE_FILE_COLUMN].tolist() if cached else [None] * len(table)
        self.cache_rows = table[CACHE_ROW_COLUMN].tolist() if cached else [None] * len(table)
        self.source_sizes = (
            table[[SOURCE_HEIGHT_COLUMN, SOURCE_WIDTH_COLUMN]].to_numpy(np.int64)
            if SOURCE_HEIGHT_COLUMN in table.columns
            else None
        )
        self.labels = table[LABEL_COLUMN].to_numpy(dtype=np.float32)
        self.transforms = list(transforms)
        self.transform_ids = (
            np.zeros(len(table), np.int64) if transform_ids is None else np.asarray(transform_ids)
        )
        self.seed = seed
        self.windows = list(windows) if windows is not None else [DeepWindow()] * len(self.transforms)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        transform = self.transforms[self.transform_ids[index]]
        transform.set_random_seed(derive_seed(self.seed, epoch, index))
        cache_file = self.cache_files[index]
        if isinstance(cache_file, str):
            pixels = cached_image(cache_file, int(self.cache_rows[index]))
            height, width = self.source_sizes[index]
        else:
            pixels = read_grayscale(self.files[index], self.windows[self.transform_ids[index]])
            height, width = pixels.shape
        image = transform(image=pixels)["image"]
        return {
            "image": image,
            "label": torch.tensor(self.labels[index]),
            "index": index,
            # the stored image's size before crop and resize: where its rows land in ``image``
            "source_size": torch.tensor([height, width]),
        }
