"""Experiment loggers built from config. W&B runs offline, with no key, unless a key or login is present."""

from __future__ import annotations

import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

WANDB_MODES = ("auto", "online", "offline")


def wandb_credentials_present() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def wandb_logger(
    project: str,
    save_dir: str,
    mode: str = "auto",
    name: str | None = None,
    group: str | None = None,
    tags: Sequence[str] = (),
    entity: str | None = None,
    job_type: str = "train",
) -> WandbLogger:
    """A WandbLogger; ``mode=auto`` goes online only when credentials exist (WANDB_API_KEY or a netrc
    login), else offline (sync later with ``wandb sync``). ``WANDB_MODE`` in the environment wins."""
    if mode not in WANDB_MODES:
        from cxrsyn.errors import CxrsynError

        raise CxrsynError(f"logger.mode={mode!r} is unknown; use one of {', '.join(WANDB_MODES)}")
    env_mode = os.environ.get("WANDB_MODE")
    offline = env_mode in ("offline", "dryrun") or (
        env_mode is None and (mode == "offline" or (mode == "auto" and not wandb_credentials_present()))
    )
    if offline:
        rank_zero_info(f"wandb: offline mode, run files under {save_dir}/wandb (upload later: wandb sync)")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        project=project,
        save_dir=save_dir,
        offline=offline,
        name=name,
        group=group,
        tags=list(tags),
        entity=entity,
        job_type=job_type,
        log_model=False,
    )
