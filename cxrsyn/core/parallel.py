"""Ordered parallel map over chunks in worker processes, with a progress bar.

Workers are spawned, not forked: forking a process that already runs torch threads can deadlock.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def restore_start_method() -> None:
    """Inside a joblib (loky) worker, as a study's parallel jobs run, the global start method is ``loky``, which
    the processes our pools spawn cannot resolve; put back the platform's standard (``spawn`` here too)."""
    if multiprocessing.get_start_method(allow_none=True) == "loky":
        multiprocessing.set_start_method("spawn", force=True)


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (taskset, a container's cpuset, a test worker's
    share), not every core of the machine as ``os.cpu_count()`` says."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def chunked(items: Sequence[T], size: int) -> list[Sequence[T]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def map_chunks(
    fn: Callable[[Sequence[Any]], list[Any]],
    chunks: Sequence[Sequence[Any]],
    workers: int | None = None,
    desc: str = "",
    show_progress: bool = True,
) -> Iterator[tuple[int, list[Any]]]:
    """Yield ``(chunk number, fn(chunk))`` in chunk order. ``workers`` <= 1 runs in this process.

    ``fn`` must be a module-level function (it is pickled into the workers).
    """
    workers = usable_cores() if workers is None else workers
    total = sum(len(chunk) for chunk in chunks)
    with tqdm(
        total=total, desc=desc, unit="img", disable=not show_progress or total == 0, leave=False
    ) as bar:
        if workers <= 1 or len(chunks) <= 1:
            for number, chunk in enumerate(chunks):
                result = fn(chunk)
                bar.update(len(chunk))
                yield number, result
            return
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            # keep a bounded number of chunks in flight so results stream (and a crash loses little)
            pending: dict[int, Any] = {}
            next_chunk = 0
            for number in range(len(chunks)):
                while next_chunk < len(chunks) and len(pending) < 2 * workers:
                    pending[next_chunk] = pool.submit(fn, chunks[next_chunk])
                    next_chunk += 1
                result = pending.pop(number).result()
                bar.update(len(chunks[number]))
                yield number, result
