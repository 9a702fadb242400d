"""The decode-once cache: every selected image decoded, cropped and resized once into one uint8 array.

A cache folder ``<cache_dir>/<source>-<key>/`` holds

- ``images.npy``: an N x S x S uint8 array (memory-mapped when read, so workers share the page cache);
- ``sizes.npy``: N x 2 int32, each stored image's (height, width) before crop and resize (where the bottom
  band of the original lands in the model input: Grad-CAM's band share);
- ``index.csv``: the samples, row i being image i, with their attributes;
- ``state.npy``: per image 0 = to do, 1 = done, 2 = failed; written after each chunk's pixels are flushed,
  so a build killed at any instant resumes where it stopped and never trusts an unwritten image;
- ``failures.jsonl``: why each failed image failed;
- ``meta.json``: the key's ingredients and, once finished, ``complete: true``.

The key hashes the preprocessing (size, resize policy, crop, decoder version) and every source file's
path, label, size and modification time: change any of them and a new cache is built beside the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import building, write_csv, write_json
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.core.parallel import chunked, map_chunks
from cxrsyn.data.decode import Preprocessing, decode_with_size
from cxrsyn.data.sources import FILE_COLUMN, BadFiles

CACHE_FORMAT = 2  # 2: sizes.npy
CACHE_FILE_COLUMN = "cache_file"
CACHE_ROW_COLUMN = "cache_row"
SOURCE_HEIGHT_COLUMN, SOURCE_WIDTH_COLUMN = "source_height", "source_width"
IMAGES_NAME, SIZES_NAME, STATE_NAME, INDEX_NAME, META_NAME, FAILURES_NAME = (
    "images.npy",
    "sizes.npy",
    "state.npy",
    "index.csv",
    "meta.json",
    "failures.jsonl",
)
TODO, DONE, FAILED = 0, 1, 2
CHUNK_SIZE = 64


def cache_key(table: pd.DataFrame, prep: Preprocessing) -> str:
    digest = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, **prep.as_dict()}, sort_keys=True).encode())
    for file, path, label in table[[FILE_COLUMN, PATH_COLUMN, LABEL_COLUMN]].itertuples(index=False):
        stat = os.stat(file)
        digest.update(f"{path}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass
class CacheResult:
    table: pd.DataFrame  # the kept samples, with cache_file and cache_row
    skipped: list[dict[str, str]]
    folder: Path
    built: bool  # False when a complete cache was found


def build_cache(
    table: pd.DataFrame,
    prep: Preprocessing,
    cache_dir: str | os.PathLike,
    name: str,
    bad: BadFiles,
    root: str | os.PathLike,
    workers: int | None = None,
    show_progress: bool = True,
) -> CacheResult:
    """Decode every row of ``table`` into the cache (or reuse a complete one); failures follow ``bad``."""
    if table.empty:
        raise CxrsynError(f"{name}: nothing selected to cache under {root}")
    key = cache_key(table, prep)
    folder = Path(cache_dir) / f"{name}-{key[:16]}"
    with building(folder):
        meta = _read_meta(folder)
        if meta.get("key") != key:
            _start(folder, table, prep, key, name)
            meta = _read_meta(folder)
        built = not meta.get("complete", False)
        if built:
            _fill(folder, table, prep, bad, root, workers, show_progress, name)
            meta.update(complete=True, finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
            write_json(folder / META_NAME, meta)
    return _result(folder, table, bad, root, built)


def _start(folder: Path, table: pd.DataFrame, prep: Preprocessing, key: str, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (IMAGES_NAME, SIZES_NAME, STATE_NAME, FAILURES_NAME, META_NAME):
        (folder / stale).unlink(missing_ok=True)
    size = prep.image_size
    np.lib.format.open_memmap(
        folder / IMAGES_NAME, mode="w+", dtype=np.uint8, shape=(len(table), size, size)
    ).flush()
    np.save(folder / SIZES_NAME, np.zeros((len(table), 2), np.int32))
    np.save(folder / STATE_NAME, np.zeros(len(table), np.int8))
    write_csv(folder / INDEX_NAME, table.drop(columns=[FILE_COLUMN]))
    meta = {
        "format": CACHE_FORMAT,
        "key": key,
        "source": name,
        "n": len(table),
        **prep.as_dict(),
        "complete": False,
    }
    write_json(folder / META_NAME, meta)  # last: a folder with meta.json has all its files


def _fill(
    folder: Path,
    table: pd.DataFrame,
    prep: Preprocessing,
    bad: BadFiles,
    root: str | os.PathLike,
    workers: int | None,
    show_progress: bool,
    name: str,
) -> None:
    images = np.load(folder / IMAGES_NAME, mmap_mode="r+")
    sizes = np.load(folder / SIZES_NAME, mmap_mode="r+")
    state = np.load(folder / STATE_NAME, mmap_mode="r+")
    files = table[FILE_COLUMN].tolist()
    todo = np.flatnonzero(state == TODO)
    row_chunks = chunked(todo, CHUNK_SIZE)
    jobs = [([files[row] for row in rows], prep) for rows in row_chunks]
    started = time.perf_counter()
    with open(folder / FAILURES_NAME, "a") as failures:
        for number, results in map_chunks(
            decode_chunk, jobs, workers, desc=f"{name}: decode once", show_progress=show_progress
        ):
            rows = row_chunks[number]
            failed = [
                (row, reason) for row, (image, reason, _) in zip(rows, results, strict=True) if image is None
            ]
            for row, (image, _, size) in zip(rows, results, strict=True):
                if image is not None:
                    images[row] = image
                    sizes[row] = size
            images.flush()  # pixels first, then the state that vouches for them
            sizes.flush()
            state[rows] = DONE
            for row, reason in failed:
                state[row] = FAILED
                failures.write(json.dumps({"row": int(row), "reason": reason}) + "\n")
            failures.flush()
            state.flush()
            if (
                failed and bad.policy == "error"
            ):  # stop at the first bad file; skipped ones are listed by _result
                bad(_relative(files[failed[0][0]], root), failed[0][1])
    seconds = time.perf_counter() - started
    if len(todo):
        print(
            f"{name}: decoded {len(todo)} images in {seconds:.1f} s ({len(todo) / max(seconds, 1e-9):.0f} images/s)"
        )


def decode_chunk(
    job: tuple[Sequence[str], Preprocessing],
) -> list[tuple[np.ndarray | None, str, tuple[int, int]]]:
    """Worker: each file decoded to the cache size with its stored size, or None and the reason it failed."""
    files, prep = job
    results: list[tuple[np.ndarray | None, str, tuple[int, int]]] = []
    for file in files:
        try:
            image, size = decode_with_size(file, prep)
            results.append((image, "", size))
        except (CxrsynError, OSError) as error:
            text = str(error)
            reason = text.split(": ", 1)[1] if text.startswith(str(file)) else text
            results.append((None, reason.rsplit("; ", 1)[0], (0, 0)))
    return results


def _result(
    folder: Path, table: pd.DataFrame, bad: BadFiles, root: str | os.PathLike, built: bool
) -> CacheResult:
    state = np.load(folder / STATE_NAME)
    if (state == TODO).any():
        raise CxrsynError(f"cache {folder} is incomplete; delete the folder and run prepare again")
    failed = np.flatnonzero(state == FAILED)
    if len(failed):  # also those recorded by an earlier, interrupted or finished, build
        reasons = _failures(folder)
        for row in failed:
            bad(_relative(table[FILE_COLUMN].iloc[row], root), reasons.get(int(row), "failed to decode"))
    sizes = np.load(folder / SIZES_NAME)
    kept = table.assign(
        **{
            CACHE_FILE_COLUMN: str(folder / IMAGES_NAME),
            CACHE_ROW_COLUMN: np.arange(len(table)),
            SOURCE_HEIGHT_COLUMN: sizes[:, 0],
            SOURCE_WIDTH_COLUMN: sizes[:, 1],
        }
    )
    kept = kept[state == DONE].reset_index(drop=True)
    return CacheResult(kept, list(bad.skipped), folder, built)


def _failures(folder: Path) -> dict[int, str]:
    path = folder / FAILURES_NAME
    if not path.is_file():
        return {}
    return {item["row"]: item["reason"] for item in map(json.loads, path.read_text().splitlines())}


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / META_NAME).read_text())
    except (OSError, ValueError):
        return {}


def _relative(file: str, root: str | os.PathLike) -> str:
    try:
        return str(Path(file).relative_to(root))
    except ValueError:
        return str(file)


_OPEN: dict[str, np.ndarray] = {}


def cached_image(cache_file: str, row: int) -> np.ndarray:
    """Image ``row`` of a cache as float32 in [0, 1]; each process maps each cache file once."""
    images = _OPEN.get(cache_file)
    if images is None:
        images = _OPEN[cache_file] = np.load(cache_file, mmap_mode="r")
    return images[row].astype(np.float32) * np.float32(1.0 / 255.0)
