"""The image sets an audit reads: the audited set and the reference sets, from the same sources as training.

Images are decoded once per run to one square grid (``image_size``, stretched: no padding, so positions are
fractions of each image's own frame), with the source's bottom crop, as training would read them.
Reference sets are reduced to descriptors and embeddings chunk by chunk and cached on disk under
``cache_dir``, keyed like the decode-once cache (every file's path, label, size and modification time, the
preprocessing) plus the descriptors' settings and the embedding model's identity: a second audit against
the same references decodes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cxrsyn.auditing.descriptors import CorrelationDescriptor
from cxrsyn.core.fileio import write_npz
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.core.parallel import chunked, map_chunks
from cxrsyn.core.paths import check_name
from cxrsyn.data.cache import cache_key, decode_chunk
from cxrsyn.data.decode import Preprocessing
from cxrsyn.data.sources import FILE_COLUMN, DatasetFolder, read_source

PATIENT_COLUMN = "patient"
CHUNK = 64
PARALLEL_FROM = 2000  # images; fewer are decoded in this process when ``workers`` is null


@dataclass
class ImageSet:
    """A source's samples (``file``, ``path``, ``label``, ``patient``, attributes) and what was read."""

    name: str
    root: str
    table: pd.DataFrame
    prep: Preprocessing
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        return self.table[LABEL_COLUMN].to_numpy().astype(int)

    @property
    def patients(self) -> np.ndarray:
        return self.table[PATIENT_COLUMN].astype(str).to_numpy()


def read_set(name: str, source: DatasetFolder, image_size: int) -> ImageSet:
    """Prepare (the phantom generates itself) and index a source; samples without a ``patient`` column
    count as one patient per image path."""
    check_name(name, "audit set name ")  # names its figures and entries
    source.prepare()
    index = read_source(source)
    table = index.table.reset_index(drop=True)
    has_patient = PATIENT_COLUMN in table.columns
    if not has_patient:
        table[PATIENT_COLUMN] = table[PATH_COLUMN].astype(str)
    prep = Preprocessing(image_size, "stretch", float(source.crop_bottom_fraction), True)
    summary = {
        "root": str(source.root),
        "n": len(table),
        "n_pos": int((table[LABEL_COLUMN] == 1).sum()),
        "n_neg": int((table[LABEL_COLUMN] == 0).sum()),
        "patients": int(table[PATIENT_COLUMN].nunique()),
        "patient_column": "patient" if has_patient else "none (each image its own patient)",
        "crop_bottom_fraction": float(source.crop_bottom_fraction),
        "skipped": list(index.skipped),
        "found": index.found,
    }
    return ImageSet(name, str(source.root), table, prep, summary)


def decode_rows(
    image_set: ImageSet, rows: np.ndarray | None = None, workers: int | None = None, desc: str = ""
) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
    """Yield (row numbers, (n, 1, S, S) float images in [0, 1]) chunk by chunk; a file that fails to decode
    stops with its reason (the source listed it as readable)."""
    from cxrsyn.core.errors import CxrsynError

    rows = np.arange(len(image_set.table)) if rows is None else np.asarray(rows)
    if workers is None:  # starting worker processes costs seconds: only worth it for large sets
        workers = 1 if len(rows) < PARALLEL_FROM else None
    files = image_set.table[FILE_COLUMN].tolist()
    row_chunks = chunked(rows, CHUNK)
    jobs = [([files[row] for row in chunk], image_set.prep) for chunk in row_chunks]
    for number, results in map_chunks(decode_chunk, jobs, workers, desc=desc or f"{image_set.name}: decode"):
        for row, (image, reason, _) in zip(row_chunks[number], results, strict=True):
            if image is None:
                raise CxrsynError(f"{files[row]}: {reason}; replace the file or list it in data.exclude_file")
        pixels = np.stack([image for image, _, _ in results]).astype(np.float32) / 255.0
        yield np.asarray(row_chunks[number]), torch.from_numpy(pixels)[:, None]


def load_images(image_set: ImageSet, workers: int | None = None) -> torch.Tensor:
    """Every image of the set, (N, 1, S, S) float in [0, 1] (the audited set: a few hundred images)."""
    parts = [pixels for _, pixels in decode_rows(image_set, workers=workers)]
    return torch.cat(parts)


@dataclass
class Features:
    coarse: np.ndarray  # (N, D1) canonical coarse descriptors
    fine: np.ndarray  # (N, D2) canonical fine descriptors
    embeddings: np.ndarray  # (N, d)


def compute_features(
    images: torch.Tensor, coarse: CorrelationDescriptor, fine: CorrelationDescriptor, model: Any
) -> Features:
    batch = getattr(model, "batch_size", 32)
    embeddings = torch.cat([model.embed(images[i : i + batch]) for i in range(0, len(images), batch)])
    return Features(
        coarse.canonical(images).numpy(), fine.canonical(images).numpy(), embeddings.float().numpy()
    )


def reference_features(
    image_set: ImageSet,
    coarse: CorrelationDescriptor,
    fine: CorrelationDescriptor,
    model: Any,
    cache_dir: str | os.PathLike | None,
    workers: int | None = None,
) -> tuple[Features, dict[str, Any]]:
    """Descriptors and embeddings of every reference image, from the cache when present, else computed
    chunk by chunk (with a progress bar) and cached. Returns them and ``{cache, built, key}`` (``key``: of
    the set's table, decoding, descriptors and model; what is derived from them is cached under it too)."""
    digest = hashlib.sha256(cache_key(image_set.table, image_set.prep).encode())
    digest.update(json.dumps([asdict(coarse), asdict(fine), model.identity], sort_keys=True).encode())
    key = digest.hexdigest()[:16]
    file = Path(cache_dir) / f"audit-{image_set.name}-{key}.npz" if cache_dir else None
    if file is not None and file.is_file():
        with np.load(file) as saved:
            return Features(saved["coarse"], saved["fine"], saved["embeddings"]), {
                "cache": str(file),
                "built": False,
                "key": key,
            }
    parts: list[Features] = []
    bar = tqdm(total=len(image_set.table), desc=f"{image_set.name}: descriptors and embeddings", unit="img")
    with bar:
        for _, pixels in decode_rows(image_set, workers=workers, desc=f"{image_set.name}: decode"):
            parts.append(compute_features(pixels, coarse, fine, model))
            bar.update(len(pixels))
    features = Features(
        *(np.concatenate([getattr(p, name) for p in parts]) for name in ("coarse", "fine", "embeddings"))
    )
    if file is not None:
        write_npz(file, coarse=features.coarse, fine=features.fine, embeddings=features.embeddings)
    return features, {"cache": str(file) if file else None, "built": True, "key": key}
