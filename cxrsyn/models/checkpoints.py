"""Reading checkpoints without running code: a checkpoint is a pickle, and a pickle from elsewhere (a
download, a shared folder) can run any code when loaded. Every load, ours and Lightning's
(``load_from_checkpoint``, resuming with ``ckpt_path``, testing a checkpoint), uses
``torch.load(weights_only=True)``: tensors, numbers, strings and plain containers, plus ``SAFE_GLOBALS``.
A file that needs anything else stops with one line naming what it needs; it is never unpickled. A file that
is not a readable checkpoint at all (truncated, zero bytes, another format) stops with one line too.

Weights published as a whole pickled model (torchxrayvision's DenseNets are saved with ``torch.save(model)``)
are read by ``load_module_weights`` without running any code: every class of the model becomes an inert
record that keeps its tensors, and nothing but tensor rebuilding and plain containers is called."""

from __future__ import annotations

import _compat_pickle
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


def refused(path: str | os.PathLike, error: pickle.UnpicklingError, weights: bool = False) -> CxrsynError:
    """The one line for a file that needs more than plain data to load (``weights``: a weights file rather
    than a checkpoint of ``cxrsyn.train``)."""
    found = _GLOBAL.search(str(error))
    needs = found.group(1) if found else " ".join(str(error).split())[:120]
    if weights:
        return CxrsynError(
            f"{path} needs {needs} to load, which no weights file needs; it was not unpickled (unpickling can "
            "run code): give a state dict saved with torch.save(model.state_dict(), FILE)"
        )
    return CxrsynError(
        f"{path} needs {needs} to load, which no checkpoint of cxrsyn.train holds; it was not unpickled "
        "(unpickling can run code): use a checkpoint written by python -m cxrsyn.train, or if you trust this "
        "file and cxrsyn needs the class, add it to SAFE_GLOBALS in cxrsyn/models/checkpoints.py"
    )


def unreadable(path: str | os.PathLike, error: BaseException, option: str = "") -> CxrsynError:
    """The one line for a file torch cannot read as a checkpoint (truncated, empty, another format)."""
    named = f"{option}={path}" if option else str(path)
    return CxrsynError(
        f"{named} is not a readable checkpoint ({type(error).__name__}: {_first_line(error)}); it may be "
        "truncated (a copy or download that did not finish): copy it again, or give another checkpoint"
    )


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 120 else text[:117] + "..."


@contextmanager
def reading(path: str | os.PathLike, option: str = "") -> Iterator[None]:
    """Reading a checkpoint inside the block: only plain data (``SAFE_GLOBALS`` aside), and every failure
    as one line naming the file (and the option that gave it)."""
    try:
        with trusted_globals():
            yield
    except pickle.UnpicklingError as error:
        if _GLOBAL.search(str(error)) or "weights_only" in str(error).lower():
            raise refused(path, error) from None
        raise unreadable(path, error, option) from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as error:
        if isinstance(error, FileNotFoundError):
            raise CxrsynError(
                f"{option or 'checkpoint'}={path} does not exist; give a checkpoint file"
            ) from None
        raise unreadable(path, error, option) from None


def load_checkpoint(path: str | os.PathLike, option: str = "") -> dict[str, Any]:
    """A checkpoint's contents on the CPU, loaded with ``weights_only=True`` (see the module doc)."""
    path = Path(path)
    with reading(path, option):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_model(ckpt_path: str | os.PathLike) -> PneumoniaClassifier:
    """Lightning's ``load_from_checkpoint`` unpickles the file again: with ``weights_only=True`` too."""
    with reading(ckpt_path, "ckpt_path"):
        return PneumoniaClassifier.load_from_checkpoint(ckpt_path, map_location="cpu", weights_only=True)


# --------------------------------------------------------------------------- whole pickled models, inert
# Classes of a pickled model are replaced by an inert record when they come from these packages; the
# callables below are the only ones the pickle may call (how torch rebuilds tensors, plain containers).
_MODEL_PACKAGES = ("torch.nn.", "torchvision.", "torchxrayvision.", "timm.")
_CALLABLES = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("torch", "Size"),
    ("torch", "device"),
}


class _InertModule:
    """What a module class of a pickled model becomes: it keeps the state it is given and runs nothing."""

    dump_patches = False  # read by torch's legacy loader, which compares module source code

    def __new__(cls, *args: Any, **kwargs: Any) -> _InertModule:  # noqa: ARG004 - the pickle's arguments
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slot state)
            state = state[0]
        if isinstance(state, dict):
            self.__dict__.update(state)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names in protocol-2 pickles
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _CALLABLES:
            return super().find_class(module, name)
        if module == "torch" and (
            name.endswith("Storage") or isinstance(getattr(torch, name, None), torch.dtype)
        ):
            return getattr(torch, name)
        if f"{module}.".startswith(_MODEL_PACKAGES):
            return type(name, (_InertModule,), {"__module__": "cxrsyn.inert"})
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed in a model file")


class _RestrictedPickle:
    """A ``pickle_module`` for ``torch.load``: its unpickler resolves only the names above."""

    Unpickler = _RestrictedUnpickler
    UnpicklingError = pickle.UnpicklingError

    @staticmethod
    def load(file: Any, **kwargs: Any) -> Any:
        return _RestrictedUnpickler(file, **kwargs).load()


def _state_of(record: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an inert module tree: parameters, persistent buffers, then children."""
    if not isinstance(record, _InertModule):
        raise pickle.UnpicklingError("the file holds no model")
    values = vars(record)
    skipped = set(values.get("_non_persistent_buffers_set") or ())
    state: dict[str, torch.Tensor] = {}
    for key in ("_parameters", "_buffers"):
        for name, tensor in (values.get(key) or {}).items():
            if tensor is not None and not (key == "_buffers" and name in skipped):
                state[f"{prefix}{name}"] = tensor.detach() if hasattr(tensor, "detach") else tensor
    for name, child in (values.get("_modules") or {}).items():
        if child is not None:
            state.update(_state_of(child, f"{prefix}{name}."))
    return state


def load_module_weights(path: str | os.PathLike, option: str = "") -> dict[str, torch.Tensor]:
    """A weights file as a state dict, without running code: a state dict saved with ``torch.save`` (read
    with ``weights_only=True``), or a whole model saved with ``torch.save(model)`` (read by the restricted
    unpickler above: module classes become inert records, so no constructor, ``__setstate__`` or
    ``__reduce__`` of the file's choosing runs). Anything else stops with one line."""
    path = Path(path)
    try:
        with trusted_globals():
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        saved = None  # needs classes: maybe a whole pickled model
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise unreadable(path, error, option) from None
    if saved is None:
        try:
            record = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RestrictedPickle)
            return _state_of(record)
        except pickle.UnpicklingError as error:
            raise refused(path, error, weights=True) from None
        except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
            raise unreadable(path, error, option) from None
    if isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict):
        saved = saved["state_dict"]
    if not isinstance(saved, dict) or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise CxrsynError(
            f"{option + '=' if option else ''}{path} holds no state dict of tensors; give a weights file saved "
            "with torch.save(model.state_dict(), FILE)"
        )
    return saved


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
    checkpoint = load_checkpoint(path, "init_from")
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
