"""Lightning's checkpoint IO for training: written atomically (a crash while saving leaves the previous
file intact), read with ``weights_only=True`` when resuming or testing (see ``cxrsyn.models.checkpoints``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from cxrsyn.core.secrets import redact
from cxrsyn.models.checkpoints import reading


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(checkpoint.get("hyper_parameters"), dict):  # config values: no key, even one in a path
            checkpoint = {
                **checkpoint,
                "hyper_parameters": redact(dict(checkpoint["hyper_parameters"]), by_name=False),
            }
        partial = path.with_name(f".{path.name}.partial-{rank_zero_only.rank}")
        with open(partial, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        """Resuming (``ckpt_path=last``) and testing a checkpoint read plain data only, whatever is asked; a
        file that is not a readable checkpoint (truncated by a full disk or a copy) stops with one line."""
        with reading(path, "ckpt_path"):
            if map_location is None:
                return super().load_checkpoint(path, weights_only=True)
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
