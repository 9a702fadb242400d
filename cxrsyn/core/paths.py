"""Where cxrsyn may write and read: names that become path components, outputs that stay inside their folder,
and dataset paths that stay inside their dataset root.

- ``check_name``: a test-set name, ``name=``, an experiment or part name becomes a file or folder name; it
  may hold letters, digits, ``.``, ``_`` and ``-`` and must start with a letter or digit (so it is never
  ``..``, never hidden and never begins like a spreadsheet formula).
- ``inside``: the one check that an output path stays inside the folder the user named (after ``..`` and
  symlinks are resolved).
- ``normalize_relative`` and ``outside_root``: dataset paths as listed in a manifest or label table are
  normalised (``./a//b`` is ``a/b``) and those that are absolute, climb with ``..`` or resolve outside the
  dataset root are found, so readers can refuse them by default.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from cxrsyn.core.errors import CxrsynError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit"
MAX_NAME_LENGTH = 128


def check_name(value: object, what: str) -> str:
    """``value`` as a name that is safe as one path component; otherwise one line naming ``what``
    (e.g. ``"evaluate name="``), the value and the allowed characters."""
    text = str(value)
    if len(text) > MAX_NAME_LENGTH or not NAME_PATTERN.fullmatch(text):
        raise CxrsynError(
            f"{what}{text!r} cannot name a file or folder: use {NAME_RULE} (at most {MAX_NAME_LENGTH})"
        )
    return text


def inside(folder: str | os.PathLike, path: str | os.PathLike) -> Path:
    """``path`` (absolute, or relative to ``folder``) if it resolves inside ``folder``, else one line: cxrsyn
    never writes outside the folder the user named."""
    folder = Path(folder)
    target = folder / path
    root = os.path.realpath(folder)
    resolved = os.path.realpath(target)
    if os.path.commonpath([root, resolved]) != root:
        raise CxrsynError(
            f"{path} would be written outside {folder} (it resolves to {resolved}); cxrsyn writes only "
            "inside the folder you name: check the names in the config and the files it reads"
        )
    return target


def normalize_relative(path: str) -> str:
    """``path`` with empty and ``.`` components removed (``./images//x.png`` -> ``images/x.png``); ``..`` is
    kept (readers refuse it) and an absolute path stays absolute."""
    parts = [part for part in str(path).replace(os.sep, "/").split("/") if part not in ("", ".")]
    return ("/" if str(path).startswith(("/", os.sep)) else "") + "/".join(parts)


def why_outside(path: str) -> str | None:
    """Why a listed dataset path cannot be inside its root without looking at the disk: absolute, or ``..``."""
    if os.path.isabs(path) or str(path).startswith("/"):
        return "is absolute"
    if ".." in str(path).replace(os.sep, "/").split("/"):
        return "contains '..'"
    return None


class RootResolver:
    """Resolves files under one dataset root (symlinks included), resolving each folder once: a root lists
    tens of thousands of files in a few folders."""

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.realpath(root)
        self._folders: dict[str, str] = {}

    def resolve(self, file: str | os.PathLike) -> str:
        file = os.fspath(file)
        folder, name = os.path.split(os.path.abspath(file))
        real_folder = self._folders.get(folder)
        if real_folder is None:
            real_folder = self._folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate

    def is_inside(self, file: str | os.PathLike) -> bool:
        resolved = self.resolve(file)
        return os.path.commonpath([self.root, resolved]) == self.root


def outside_root(root: str | os.PathLike, files: Iterable[str | os.PathLike]) -> list[int]:
    """Positions of ``files`` (absolute, or relative to the working directory) that resolve outside ``root``."""
    resolver = RootResolver(root)
    return [i for i, file in enumerate(files) if not resolver.is_inside(file)]
