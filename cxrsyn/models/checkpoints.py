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

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import sha256_of_file
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


INIT_PARTS = ("backbone", "all")


def initialize_from(
    model: PneumoniaClassifier, path: str | os.PathLike, part: str = "backbone"
) -> dict[str, Any]:
    """Copy a ``cxrsyn.train`` checkpoint's weights into ``model`` before training (``init_from``):
    ``backbone`` every tensor but the classifier head's (the head keeps its seeded initialisation), ``all``
    every tensor. Returns what was loaded, for the run identity."""
    if part not in INIT_PARTS:
        raise CxrsynError(f"init_part={part!r}; use one of {', '.join(INIT_PARTS)}")
    path = Path(path)
    if not path.is_file():
        raise CxrsynError(
            f"init_from={path} does not exist; give a checkpoint written by python -m cxrsyn.train "
            "(<run folder>/checkpoints/last.ckpt)"
        )
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict):
        raise CxrsynError(
            f"init_from={path} has no state_dict; give a checkpoint written by python -m cxrsyn.train"
        )
    theirs = (checkpoint.get("hyper_parameters") or {}).get("backbone")
    ours = model.hparams.get("backbone")
    if theirs is not None and theirs != ours:
        raise CxrsynError(
            f"init_from={path} holds a {theirs} but model.backbone={ours}; set model.backbone={theirs}"
        )
    head = model.head_parameter_names()
    own = model.net.state_dict()
    wanted = [key for key in own if part == "all" or key not in head]
    missing = [key for key in wanted if f"net.{key}" not in state]
    wrong = [key for key in wanted if key not in missing and state[f"net.{key}"].shape != own[key].shape]
    if missing or wrong:
        what = f"lacks net.{missing[0]}" if missing else f"has net.{wrong[0]} of another shape"
        raise CxrsynError(f"init_from={path} {what}; give a checkpoint of the same model configuration")
    model.net.load_state_dict({**own, **{key: state[f"net.{key}"] for key in wanted}})
    return {
        "path": str(path),
        "sha256": sha256_of_file(path),
        "part": part,
        "tensors": len(wanted),
        "epoch": checkpoint.get("epoch"),
    }
