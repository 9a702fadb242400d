"""File IO every step shares: atomic writes (a crash leaves the old file or the new one, never half), JSON,
file hashes, and a lock for a folder that several processes may build at once."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: str | os.PathLike, data: Mapping[str, Any]) -> Path:
    """``data`` as JSON, atomically, with every secret found by value replaced (``core.secrets``)."""
    from cxrsyn.core.secrets import redact

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(redact(data, by_name=False), handle, indent=2, allow_nan=False)
        handle.write("\n")
    os.replace(handle.name, path)
    return path


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
    import io

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
