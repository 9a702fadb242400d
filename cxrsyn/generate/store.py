"""The output of a generation run: a dataset folder that survives a crash at any instant.

```
DIR/images/<id>.png        the images (as the generator returned them; JPEG replies are stored as PNG)
DIR/records/<id>.json      one record per kept image: request, prompt, model, sha256, usage, timestamp
DIR/manifest.csv           rebuilt from the records (path,label,sha256,generator,model,prompt,attributes...)
DIR/attempts.jsonl         every retried, blocked or failed attempt, with its reason
```

Saving an image: the bytes go to ``images/.<id>.png.tmp`` (flushed to disk), then the record is written
atomically, then the image is renamed into place. A crash before the record leaves a temporary file that
is ignored (the request is asked again); a crash after it leaves a record whose image is completed from the
temporary file on the next start. The manifest lists only records whose image exists with the recorded
sha256, so it never has a row without its image, and an image that was paid for is never asked for again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from cxrsyn.data.manifest import IMAGES_DIRNAME, write_manifest
from cxrsyn.errors import CxrsynError
from cxrsyn.generate.prompts import ImageRequest

RECORDS_DIRNAME = "records"
ATTEMPTS_NAME = "attempts.jsonl"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def as_png(data: bytes, mime_type: str | None) -> bytes:
    """The image as PNG bytes (PNG replies unchanged); raises ``ValueError`` when it is not an image."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.format == "PNG":
            return data
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


class OutputStore:
    def __init__(self, out_dir: str | os.PathLike, generator: str, model: str):
        self.root = Path(out_dir)
        self.images = self.root / IMAGES_DIRNAME
        self.records = self.root / RECORDS_DIRNAME
        self.images.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)
        self.generator = generator
        self.model = model
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------- saving
    def save(
        self, request: ImageRequest, png: bytes, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Keep one image and its record (see the module doc for the order that makes this crash safe)."""
        final = self.images / f"{request.id}.png"
        tmp = self.images / f".{request.id}.png.tmp"
        with open(tmp, "wb") as handle:
            handle.write(png)
            handle.flush()
            os.fsync(handle.fileno())
        record = {
            "path": f"{IMAGES_DIRNAME}/{final.name}",
            "label": request.label,
            "sha256": hashlib.sha256(png).hexdigest(),
            "generator": self.generator,
            "model": self.model,
            "prompt": request.prompt,
            **dict(request.attributes),
            "class_name": request.class_name,
            "request_id": request.id,
            "request_index": request.index,
            "seed": request.seed,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **dict(extra or {}),
        }
        atomic_write(self.records / f"{request.id}.json", json.dumps(record).encode())
        os.replace(tmp, final)
        return record

    def log_attempt(self, request: ImageRequest, kind: str, reason: str, **fields: Any) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "id": request.id,
            "kind": kind,
            "reason": reason,
        }
        with self._lock, open(self.root / ATTEMPTS_NAME, "a") as handle:
            handle.write(json.dumps({**entry, **fields}) + "\n")

    # ------------------------------------------------------------------------------------------ resuming
    def kept(self) -> dict[str, dict[str, Any]]:
        """Records whose image is in place with its sha256, completing renames a crash interrupted."""
        kept = {}
        for path in sorted(self.records.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except ValueError:  # cannot happen with atomic writes; a hand-edited file is asked again
                path.unlink()
                continue
            final = self.root / record["path"]
            tmp = final.with_name(f".{final.name}.tmp")
            if not final.is_file() and tmp.is_file() and _sha256(tmp) == record["sha256"]:
                os.replace(tmp, final)
            if final.is_file() and _sha256(final) == record["sha256"]:
                kept[record["request_id"]] = record
            else:
                path.unlink()
        for stray in self.images.glob(".*.tmp"):
            if stray.name[1:-4].removesuffix(".png") not in kept:
                stray.unlink()
        return kept

    def write_manifest(self, records: Iterable[Mapping[str, Any]] | None = None) -> Path:
        with self._lock:
            rows = sorted(
                self.kept().values() if records is None else records, key=lambda r: r["request_index"]
            )
            if not rows:
                raise CxrsynError(f"{self.root}: no image was generated, so there is no manifest to write")
            return write_manifest(self.root, rows)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
