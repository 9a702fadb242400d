"""File IO every step shares: atomic writes (a crash leaves the old file or the new one, never half), JSON,
spreadsheet-safe CSV, sets of outputs published together, file hashes, and a lock for a folder that several
processes may build at once.

Every file is created with mode ``0o666`` less the process umask (the usual 0644), whatever writes it. A full
disk is one line (``no space left on the device``) that says the previous file is unchanged, and leaves no
temporary file behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from filelock import FileLock

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.paths import inside

FILE_MODE = 0o666  # less the umask, as open() creates files
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceError(CxrsynError):
    """The disk (or quota) is full; the message says what was kept."""


def no_space_error(
    path: str | os.PathLike, error: OSError, kept: str = "the previous file is unchanged"
) -> NoSpaceError:
    return NoSpaceError(
        f"no space left on the device writing {path} ({error.strerror or 'ENOSPC'}); free space and rerun: {kept}"
    )


def _write_all(handle: int, data: bytes) -> None:
    """Write every byte of ``data`` to the file descriptor ``handle`` (the one place bytes reach a file)."""
    view = memoryview(data)
    while view:
        view = view[os.write(handle, view) :]


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half: a temporary
    file beside it (flushed to disk), then a rename. On a full disk: one line, the old file untouched, the
    temporary file removed."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        handle = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            _write_all(handle, data)
            os.fsync(handle)
        finally:
            os.close(handle)
        os.replace(tmp, path)
    except BaseException as error:
        tmp.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in _NO_SPACE:
            raise no_space_error(path, error) from None
        raise
    return path


def write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """``numpy.savez`` of ``arrays`` to ``path``, written as ``atomic_write`` writes (a cache a crash cannot
    leave half written)."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write(path, buffer.getvalue())


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, text.encode())


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """``data`` as JSON, atomically, with every secret found by value replaced (``core.secrets``)."""
    from cxrsyn.core.secrets import redact

    return atomic_write(path, json.dumps(redact(data, by_name=False), indent=2, allow_nan=False) + "\n")


# ------------------------------------------------------------------------------------- spreadsheet-safe CSV
# A text cell that starts with one of these is a formula to Excel, LibreOffice and Google Sheets (OWASP's
# list); a leading apostrophe makes it text. Cells that are numbers (-0.5, +3, 1e-4) are left alone.
_FORMULA_START = re.compile(r"'*[=+\-@\t\r]")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
_ESCAPED = re.compile(r"'+[=+\-@\t\r]")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula, with an apostrophe in front; anything else as is.
    Reversible (``spreadsheet_text``): a cell that already starts with apostrophes before such a character
    gets one more."""
    if isinstance(value, str) and _FORMULA_START.match(value) and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def spreadsheet_text(value: Any) -> Any:
    """The cell ``spreadsheet_safe`` was given."""
    if isinstance(value, str) and _ESCAPED.match(value):
        return value[1:]
    return value


def _map_text(table: pd.DataFrame, cell: Any) -> pd.DataFrame:
    table = table.rename(columns=lambda column: cell(column) if isinstance(column, str) else column)
    text = [
        position
        for position, dtype in enumerate(table.dtypes)
        if pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)
    ]
    if text:
        table = table.copy()
        for position in text:
            table.isetitem(position, table.iloc[:, position].map(cell, na_action="ignore"))
    return table


def write_csv(path: str | os.PathLike, table: pd.DataFrame) -> Path:
    """The one CSV writer: ``table`` without its index, secrets found by value redacted (``core.secrets``;
    path columns kept), text cells made spreadsheet-safe, written atomically. ``read_csv`` gives the cells
    back."""
    from cxrsyn.core.secrets import redact_table

    buffer = io.StringIO(newline="")
    _map_text(redact_table(table), spreadsheet_safe).to_csv(buffer, index=False)
    return atomic_write(path, buffer.getvalue())


def read_csv(path: str | os.PathLike, **kwargs: Any) -> pd.DataFrame:
    """A CSV ``write_csv`` wrote (or any CSV), its text cells as they were before they were made safe."""
    return _map_text(pd.read_csv(path, **kwargs), spreadsheet_text)


# --------------------------------------------------------------------------------------- published outputs
class Publication:
    """Files that are only ever seen together: written into a hidden staging folder inside ``folder``, then
    moved into place with the manifest (a JSON file that lists them under ``outputs``) last. A reader that
    finds the manifest finds the files it lists; a kill before the swap leaves the previous set untouched."""

    def __init__(self, folder: str | os.PathLike, manifest: str):
        self.folder = Path(folder)
        self.manifest = manifest
        self.staging = self.folder / f".{manifest}.staging"

    def path(self, relative: str | os.PathLike) -> Path:
        """Where to write ``relative`` now (inside the staging folder; its parent folders made)."""
        target = inside(self.staging, relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def write_manifest(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """The manifest, with ``outputs``: every staged file, relative to the folder."""
        outputs = sorted(
            str(file.relative_to(self.staging))
            for file in self.staging.rglob("*")
            if file.is_file() and file.name != self.manifest
        )
        manifest = {**data, "outputs": outputs}
        write_json(self.staging / self.manifest, manifest)
        return manifest

    def _previous_outputs(self) -> list[str]:
        try:
            outputs = json.loads((self.folder / self.manifest).read_text()).get("outputs")
        except (OSError, ValueError, AttributeError):
            return []
        return [str(item) for item in outputs] if isinstance(outputs, list) else []

    def _swap(self) -> None:
        staged_manifest = self.staging / self.manifest
        if not staged_manifest.is_file():
            raise RuntimeError(f"{self.manifest} was not written into {self.staging}")
        previous = set(self._previous_outputs())
        files = [f for f in self.staging.rglob("*") if f.is_file() and f != staged_manifest]
        for file in files:  # on disk before any of them replaces an old one
            _fsync(file)
        (self.folder / self.manifest).unlink(missing_ok=True)  # from here the old set is no longer complete
        current = set()
        for file in files:
            relative = file.relative_to(self.staging)
            target = inside(self.folder, relative)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(file, target)
            current.add(str(relative))
        for stale in sorted(previous - current - {self.manifest}):
            try:
                inside(self.folder, stale).unlink(missing_ok=True)
            except (CxrsynError, IsADirectoryError):
                continue  # a manifest edited by hand: never delete outside the folder
        os.replace(staged_manifest, self.folder / self.manifest)
        _fsync_folder(self.folder)

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@contextmanager
def publishing(folder: str | os.PathLike, manifest: str) -> Iterator[Publication]:
    """Write a set of outputs into ``folder`` all at once (see ``Publication``). The block writes every file
    under ``publication.path(...)`` and ends with ``publication.write_manifest(...)``. On an error (a full
    disk is one line) the staging folder is removed and the previous outputs stay as they were. The caller
    holds the folder's lock, so a staging folder left by a killed run is stale and removed first."""
    publication = Publication(folder, manifest)
    publication.discard()
    publication.staging.mkdir(parents=True)
    kept = f"the previous {manifest} and the files it lists are unchanged"
    try:
        yield publication
        publication._swap()
    except NoSpaceError:
        raise no_space_error(
            publication.folder, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), kept
        ) from None
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise no_space_error(publication.folder, error, kept) from None
        raise
    finally:
        publication.discard()


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a directory; renames stay atomic
        _fsync(folder)


def save_figure(figure: Any, path: str | os.PathLike, dpi: int = 100) -> Path:
    """A matplotlib figure as a PNG, written atomically (through the one writer) and closed."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, dpi=dpi, format="png")
    finally:
        plt.close(figure)
    return atomic_write(path, buffer.getvalue())


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file cxrsyn or Hydra wrote, read with the safe loader (no tag can construct a Python object);
    a file that is not such YAML is one line naming it."""
    import yaml

    from cxrsyn.core.errors import CxrsynError

    try:
        return yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = " ".join(str(error).split())[:160]
        raise CxrsynError(
            f"{path} is not a plain YAML file ({type(error).__name__}: {reason}); it holds something a run does "
            "not write: restore the file or remove the run folder"
        ) from None


def sha256_of_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def building(folder: str | os.PathLike) -> FileLock:
    """An exclusive lock beside ``folder`` (``<folder>.lock``) for the processes that may build it at once
    (parallel study jobs sharing a phantom set or a cache): the first builds, the others wait, then reuse."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder.with_name(f".{folder.name}.lock")))


COMMITTED_FIGURE_BYTES = 300 * 1024  # figures that may be committed (experiments/*/phantom/) stay this small


def compact_png(path: str | os.PathLike, max_bytes: int = COMMITTED_FIGURE_BYTES) -> Path:
    """Rewrite the PNG at ``path`` (atomically) as a 256-colour palette image, halving its size until the file
    fits in ``max_bytes``: report figures stay small enough to commit; the full-size originals stay in the
    run folders."""
    from PIL import Image

    path = Path(path)
    image = Image.open(path).convert("RGB")
    while True:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes or min(image.size) <= 64:
            break
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    atomic_write(path, buffer.getvalue())
    return path
