"""One writer per folder, and a finished run is never overwritten.

Every command that writes a folder (train, evaluate, audit and generate through Hydra; report and postprocess
themselves) holds an OS file lock on it (``filelock``: ``<folder>/.cxrsyn.lock``, and
``.cxrsyn.lock.owner`` naming the holder) for as long as it writes. A second command into a folder in use
stops at once with one line naming the holder; a killed run leaves no stale lock (the OS drops it). Within
one process the lock is re-entrant: the Hydra callback takes it before Hydra writes ``.hydra/``, the command
takes it again when it starts, and both release it.

A folder that holds ``metrics.json`` holds a finished run: ``python -m cxrsyn.train`` and
``cxrsyn.evaluate`` refuse to write into it unless told to resume (``ckpt_path=last``) or to replace it
(``overwrite=true``, which removes the old ``metrics.json`` first, so a killed rerun never leaves the old
results beside the new run). In a study, the check runs once for the whole sweep folder, before any job.

DDP worker processes (``LOCAL_RANK`` or ``NODE_RANK`` other than 0) write nothing of their own and share the
folder of rank 0, which holds the lock: they neither take it nor check it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.errors import CxrsynError, report_known_errors
from cxrsyn.core.fileio import atomic_write
from cxrsyn.core.paths import check_name

LOCK_NAME = ".cxrsyn.lock"
OWNER_NAME = ".cxrsyn.lock.owner"
FINISHED_NAME = "metrics.json"  # a run folder that holds it holds a finished run

_held: dict[str, list[Any]] = {}  # real path -> [FileLock, depth]
_guard = threading.Lock()


def secondary_rank() -> bool:
    """A DDP worker process started by rank 0 (which holds the folder)."""
    return os.environ.get("LOCAL_RANK", "0") not in ("", "0") or os.environ.get("NODE_RANK", "0") not in (
        "",
        "0",
    )


def owner_of(folder: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads((Path(folder) / OWNER_NAME).read_text())
    except (OSError, ValueError):
        return {}


def acquire(folder: str | os.PathLike, command: str) -> None:
    """Take ``folder``'s lock (re-entrant within this process) or stop with one line naming the holder."""
    if secondary_rank():
        return
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / LOCK_NAME), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = owner_of(folder)
            holder = (
                f"{owner.get('command', 'a cxrsyn command')}, pid {owner.get('pid', 'unknown')} on "
                f"{owner.get('host', 'unknown host')}, since {owner.get('since', 'unknown')}"
            )
            raise CxrsynError(
                f"{folder} is in use by another run ({holder}); wait for it to end or stop it, or write "
                "elsewhere: two runs in one folder would mix their files"
            ) from None
        owner = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write(folder / OWNER_NAME, json.dumps(owner))
        _held[key] = [lock, 1]


def release(folder: str | os.PathLike) -> None:
    if secondary_rank():
        return
    folder = Path(folder)
    key = os.path.realpath(folder)
    with _guard:
        entry = _held.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _held[key]
        (folder / OWNER_NAME).unlink(missing_ok=True)
        entry[0].release()


@contextmanager
def exclusive(folder: str | os.PathLike, command: str) -> Iterator[None]:
    """Hold ``folder``'s lock for the block (see the module doc)."""
    acquire(folder, command)
    try:
        yield
    finally:
        release(folder)


def resuming(cfg: Mapping[str, Any] | DictConfig) -> bool:
    return str(cfg.get("ckpt_path")) == "last"


def check_finished(folder: str | os.PathLike, cfg: Mapping[str, Any] | DictConfig) -> None:
    """Refuse (one line) to write into a folder that holds a finished run, unless ``cfg`` resumes it
    (``ckpt_path=last``) or replaces it (``overwrite=true``: its old ``metrics.json`` is removed now).
    Commands without an ``overwrite`` setting are not run commands and are not checked."""
    if "overwrite" not in cfg or secondary_rank():
        return
    finished = Path(folder) / FINISHED_NAME
    if not finished.is_file() or resuming(cfg):
        return
    if cfg.get("overwrite"):
        finished.unlink(missing_ok=True)
        return
    raise CxrsynError(
        f"{folder} holds a finished run ({FINISHED_NAME}); resume it with ckpt_path=last, replace it with "
        "overwrite=true, or write elsewhere (hydra.run.dir=...)"
    )


def check_finished_jobs(sweep_dir: str | os.PathLike, cfg: Mapping[str, Any] | DictConfig) -> None:
    """``check_finished`` for every job folder of a study, before any job runs (Hydra writes a job's
    ``.hydra/`` before the job starts)."""
    sweep_dir = Path(sweep_dir)
    if "overwrite" not in cfg or not sweep_dir.is_dir() or resuming(cfg):
        return
    jobs = sorted(job for job in sweep_dir.iterdir() if (job / FINISHED_NAME).is_file())
    if jobs and not cfg.get("overwrite"):
        raise CxrsynError(
            f"{sweep_dir} holds {len(jobs)} finished job(s) ({', '.join(job.name for job in jobs[:5])}); resume "
            "the study with ckpt_path=last, replace it with overwrite=true, or write elsewhere "
            "(hydra.sweep.dir=...)"
        )
    for job in jobs:
        check_finished(job, cfg)


class HoldRunFolder(Callback):
    """Hydra callback (``conf/hydra/default.yaml``): locks the run folder (a study: the sweep folder, then
    each job's folder) and checks for a finished run before Hydra writes anything there."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = OmegaConf.select(config, "hydra.run.dir")
        _or_exit(lambda: _start(folder, config, check_finished))

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(OmegaConf.select(config, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        experiment = OmegaConf.select(config, "experiment.name", default=None)
        if experiment is not None:  # a study's name is a folder of its sweep dir (multirun/<name>/...)
            _or_exit(lambda: check_name(experiment, "experiment.name="))
        folder = OmegaConf.select(config, "hydra.sweep.dir")
        _or_exit(lambda: _start(folder, config, check_finished_jobs))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        release(OmegaConf.select(config, "hydra.sweep.dir"))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if _multirun(config):
            folder = OmegaConf.select(config, "hydra.runtime.output_dir")
            _or_exit(lambda: acquire(folder, _command(config)))

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        if _multirun(config):
            release(OmegaConf.select(config, "hydra.runtime.output_dir"))


def _start(folder: str, config: DictConfig, check: Any) -> None:
    acquire(folder, _command(config))
    try:
        check(folder, config)
    except BaseException:
        release(folder)
        raise


def _command(config: DictConfig) -> str:
    name = OmegaConf.select(config, "hydra.job.name") or Path(sys.argv[0]).stem
    return f"cxrsyn.{name}" if not str(name).startswith("cxrsyn") else str(name)


def _multirun(config: DictConfig) -> bool:
    mode = OmegaConf.select(config, "hydra.mode")
    return getattr(mode, "name", str(mode)) == "MULTIRUN"


def _or_exit(step: Any) -> None:
    """Run ``step``; a ``CxrsynError`` is printed as one line and ends the process with status 2, as the
    commands do (Hydra would print a traceback for an exception raised in a callback)."""
    report_known_errors(step)()
