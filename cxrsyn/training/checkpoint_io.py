"""Checkpoints written atomically, and read without running code.

Writing: a crash while saving leaves the previous file intact. Reading: a checkpoint is a pickle, and a
pickle from elsewhere (a download, a shared folder) can run any code when loaded. Every load here, ours and
Lightning's (``load_from_checkpoint``, resuming with ``ckpt_path``, testing the best checkpoint), uses
``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers, plus ``SAFE_GLOBALS``.
A file that needs anything else stops with one line naming what it needs; it is never unpickled.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from cxrsyn.errors import CxrsynError

# Classes our checkpoints hold beyond torch's weights-only defaults. Today none: Lightning's checkpoint of a
# PneumoniaClassifier is tensors, numbers, strings and dicts/lists (hyperparameters are plain values).
SAFE_GLOBALS: list[Any] = []
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


@contextmanager
def trusted_globals() -> Iterator[None]:
    """Allow ``SAFE_GLOBALS`` in ``weights_only`` loads inside the block (and nothing else)."""
    with torch.serialization.safe_globals(SAFE_GLOBALS):
        yield


def refused(path: str | os.PathLike, error: pickle.UnpicklingError) -> CxrsynError:
    """The one line for a checkpoint that needs more than plain data to load."""
    found = _GLOBAL.search(str(error))
    needs = found.group(1) if found else " ".join(str(error).split())[:120]
    return CxrsynError(
        f"{path} needs {needs} to load, which no checkpoint of cxrsyn.train holds; it was not unpickled "
        "(unpickling can run code): use a checkpoint written by python -m cxrsyn.train, or if you trust this "
        "file and cxrsyn needs the class, add it to SAFE_GLOBALS in cxrsyn/training/checkpoint_io.py"
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents on the CPU, loaded with ``weights_only=True`` (see the module doc)."""
    path = Path(path)
    try:
        with trusted_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refused(path, error) from None


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{rank_zero_only.rank}")
        with open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """Resuming (``ckpt_path=last``) and testing a checkpoint read plain data only, whatever is asked."""
        try:
            with trusted_globals():
                if map_location is None:
                    return super().load_checkpoint(path, weights_only=True)
                return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as error:
            raise refused(path, error) from None
