"""The output of a generation run: a dataset folder that survives a crash at any instant.

```
DIR/images/<id>.png        the images (as the generator returned them; JPEG replies are stored as PNG)
DIR/records/<id>.json      one record per kept image: request, prompt, model, sha256, usage, timestamp
DIR/manifest.csv           rebuilt from the records (path,label,sha256,generator,model,prompt,attributes...)
DIR/attempts.jsonl         every retried, blocked or failed attempt, with its reason
DIR/generation.json        the settings that change the images (and their fingerprint), then the run's counts
DIR/.cxrsyn.lock           held (flock) by the one run writing the folder; .cxrsyn.lock.owner names it
```

Saving an image: the bytes go to ``images/.<id>.png.tmp`` (flushed to disk), then the record is written
atomically, then the image is renamed into place. A crash before the record leaves a temporary file that
is ignored (the request is asked again); a crash after it leaves a record whose image is completed from the
temporary file on the next start. The manifest lists only records whose image exists with the recorded
sha256, so it never has a row without its image, and an image that was paid for is never asked for again.

A folder is one generation: ``check_settings`` compares the settings that change the images (model, size,
seed, grid, template, ...) with those recorded in ``generation.json`` and in every record's ``fingerprint``
before any request, and ``cxrsyn.core.runfolder.exclusive`` lets one run at a time write the folder.
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

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import atomic_write
from cxrsyn.core.manifest import IMAGES_DIRNAME, write_manifest
from cxrsyn.core.secrets import redact
from cxrsyn.generate.prompts import ImageRequest

RECORDS_DIRNAME = "records"
ATTEMPTS_NAME = "attempts.jsonl"
SUMMARY_NAME = "generation.json"


def as_png(data: bytes, mime_type: str | None) -> bytes:
    """The image as PNG bytes (PNG replies unchanged); raises ``ValueError`` when it is not an image."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if image.format == "PNG":
            return data
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


def settings_fingerprint(settings: Mapping[str, Any]) -> str:
    """A short hash of the settings that change the images (canonical JSON, sorted keys)."""
    text = json.dumps(dict(settings), sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_settings(out_dir: Path, settings: Mapping[str, Any]) -> None:
    """Stop (one line: each differing key with its old and new value) when ``out_dir`` holds images made with
    other settings than ``settings``; a folder never mixes two generations."""
    summary_path = out_dir / SUMMARY_NAME
    recorded: Mapping[str, Any] | None = None
    if summary_path.is_file():
        try:
            recorded = json.loads(summary_path.read_text()).get("settings")
        except ValueError:
            raise CxrsynError(f"{summary_path} is not valid JSON; restore it or use a new out_dir") from None
    fingerprint = settings_fingerprint(settings)
    if recorded is not None and settings_fingerprint(recorded) != fingerprint:
        differing = [
            f"{key}: {recorded.get(key)!r} -> {settings.get(key)!r}"
            for key in sorted(set(recorded) | set(settings))
            if recorded.get(key) != settings.get(key)
        ]
        raise CxrsynError(
            f"{out_dir} was generated with other settings ({'; '.join(differing)}); use a new out_dir, or "
            "restore these settings to resume"
        )
    records = out_dir / RECORDS_DIRNAME
    others = sorted(
        {
            record["fingerprint"]
            for path in (records.glob("*.json") if records.is_dir() else [])
            if (record := _read_record(path)) and record.get("fingerprint") not in (None, fingerprint)
        }
    )
    if others:
        raise CxrsynError(
            f"{out_dir} holds images made with other settings (fingerprint {', '.join(others)}; these settings "
            f"give {fingerprint}, and {summary_path.name}, which lists them, does not say which differ); use a "
            "new out_dir"
        )


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class OutputStore:
    def __init__(
        self, out_dir: str | os.PathLike, generator: str, model: str, fingerprint: str | None = None
    ):
        self.root = Path(out_dir)
        self.images = self.root / IMAGES_DIRNAME
        self.records = self.root / RECORDS_DIRNAME
        self.images.mkdir(parents=True, exist_ok=True)
        self.records.mkdir(parents=True, exist_ok=True)
        self.generator = generator
        self.model = model
        self.fingerprint = fingerprint
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
            "fingerprint": self.fingerprint,
            **dict(extra or {}),
        }
        atomic_write(self.records / f"{request.id}.json", json.dumps(redact(record, by_name=False)).encode())
        os.replace(tmp, final)
        return record

    def log_attempt(self, request: ImageRequest, kind: str, reason: str, **fields: Any) -> None:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "id": request.id,
            "kind": kind,
            "reason": reason,
        }
        # an error message can quote the key (an HTTP library, a server echoing it): never stored
        line = json.dumps(redact({**entry, **fields}, by_name=False))
        with self._lock, open(self.root / ATTEMPTS_NAME, "a") as handle:
            handle.write(line + "\n")

    # ------------------------------------------------------------------------------------------ resuming
    def kept(self, repair: bool = True) -> dict[str, dict[str, Any]]:
        """Records whose image is in place with its sha256, completing renames a crash interrupted. With
        ``repair=False`` (a dry run, which holds no lock) nothing is renamed or deleted."""
        kept = {}
        for path in sorted(self.records.glob("*.json")):
            try:
                record = json.loads(path.read_text())
            except ValueError:  # cannot happen with atomic writes; a hand-edited file is asked again
                if repair:
                    path.unlink()
                continue
            final = self.root / record["path"]
            tmp = final.with_name(f".{final.name}.tmp")
            if repair and not final.is_file() and tmp.is_file() and _sha256(tmp) == record["sha256"]:
                os.replace(tmp, final)
            if final.is_file() and _sha256(final) == record["sha256"]:
                kept[record["request_id"]] = record
            elif repair:
                path.unlink()
        if repair:
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
