"""Creating a timm backbone with one output logit and a single (grayscale) input channel.

Grayscale: radiographs are single-channel. With ``in_chans=1`` timm sums the pretrained RGB filters of the
stem convolution into one filter, which gives the same response as feeding the gray image copied to three
channels at a third of the stem's cost. Inputs are normalised with the mean of the backbone's per-channel
mean and std (for ImageNet weights: 0.449 and 0.226).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import timm
import torch

from cxrsyn.core.errors import CxrsynError


def check_backbone_name(name: str) -> None:
    if timm.is_model(name):
        return
    suggestions = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(suggestions)}?" if suggestions else "see timm.list_models() for names"
    raise CxrsynError(f"model.backbone={name!r} is not a timm model; {hint}")


def create_backbone(
    name: str,
    pretrained: bool,
    weights_path: str | os.PathLike | None = None,
    in_chans: int = 1,
    drop_rate: float = 0.0,
) -> torch.nn.Module:
    """A timm model with one output. ``weights_path`` (a local timm state dict: .pth, .bin or
    .safetensors, read by timm with ``weights_only=True``: no code in the file runs) takes precedence over
    ``pretrained``, which fetches weights from the hub."""
    check_backbone_name(name)
    kwargs = {"num_classes": 1, "in_chans": in_chans, "drop_rate": drop_rate}
    if weights_path:
        path = Path(weights_path)
        if not path.is_file():
            raise CxrsynError(
                f"model.weights_path={path} does not exist; give a timm state-dict file or null"
            )
        try:
            return timm.create_model(
                name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs
            )
        except (RuntimeError, KeyError, ValueError, OSError) as error:
            first = str(error).strip().splitlines()[0][:200]
            if "weights_only" in first:  # timm reads with weights_only=True: the file needs more than data
                raise CxrsynError(
                    f"model.weights_path={path} needs more than tensors to load (a class or function of the "
                    "file's choosing); it was not unpickled (unpickling can run code): give a state dict saved "
                    "with torch.save(model.state_dict(), FILE), or a .safetensors file"
                ) from None
            raise CxrsynError(
                f"model.weights_path={path} does not fit backbone {name!r} ({type(error).__name__}: {first}); "
                "give weights saved from the same timm architecture"
            ) from None
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as error:  # network, offline mode, gated or missing files: all have the same fixes
        reason = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
        raise CxrsynError(
            f"could not fetch pretrained weights for backbone {name!r} ({type(error).__name__}: {reason}); "
            "connect once so timm caches them (HF_HOME), or download them and set model.weights_path=FILE, "
            "or set model.pretrained=false"
        ) from None


def input_normalisation(model: torch.nn.Module) -> tuple[float, float]:
    """Gray mean and std: the averages of the backbone's per-channel values (ImageNet's when unknown)."""
    config = getattr(model, "pretrained_cfg", None) or {}
    mean = config.get("mean", (0.485, 0.456, 0.406))
    std = config.get("std", (0.229, 0.224, 0.225))
    return float(sum(mean) / len(mean)), float(sum(std) / len(std))
