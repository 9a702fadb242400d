"""Reading checkpoints without running code: a checkpoint is a pickle, and a pickle from elsewhere (a
download, a shared folder) can run any code when loaded. Every load, ours and Lightning's
(``load_from_checkpoint``, resuming with ``ckpt_path``, testing a checkpoint), uses
``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers, plus ``SAFE_GLOBALS``.
A file that needs anything else stops with one line naming what it needs; it is never unpickled."""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from cxrsyn.errors import CxrsynError
from cxrsyn.models.classifier import PneumoniaClassifier

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
        "file and cxrsyn needs the class, add it to SAFE_GLOBALS in cxrsyn/models/checkpoints.py"
    )


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's contents on the CPU, loaded with ``weights_only=True`` (see the module doc)."""
    path = Path(path)
    try:
        with trusted_globals():
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refused(path, error) from None


def load_model(ckpt_path: str | os.PathLike) -> PneumoniaClassifier:
    """Lightning's ``load_from_checkpoint`` unpickles the file again: with ``weights_only=True`` too."""
    try:
        with trusted_globals():
            return PneumoniaClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise refused(ckpt_path, error) from None
