"""The software and hardware a run's numbers came from: ``metrics.json`` ``run.environment`` and the report.

Training on a CPU is deterministic for one machine, but the float kernels torch picks depend on the
instruction set (AVX2, AVX-512), the vendor (MKL takes other paths on AMD) and the library versions, so the
same seed on another machine lands on slightly different weights. ``numerics`` names what must match for two
runs to agree bit for bit; runs with different ``numerics`` agree only up to that rounding, which training
can amplify to about a change of seed.
"""

from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "timm", "lightning", "torchmetrics", "numpy", "albumentations", "pillow")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> tuple[str | None, str | None]:
    """(model name, vendor) from /proc/cpuinfo on Linux, else what ``platform`` knows."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or None, None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields.get("model name") or platform.processor() or None, fields.get("vendor_id")


def environment() -> dict[str, Any]:
    """Versions, CPU (model, vendor, the instruction set torch uses), threads and GPU; ``numerics`` is a
    short hash of the parts that change float results."""
    import torch

    model, vendor = cpu_model()
    cuda = torch.cuda.is_available()
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": model,
        "cpu_vendor": vendor,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "packages": {name: package_version(name) for name in PACKAGES},
    }
    info["numerics"] = numerics_fingerprint(info)
    return info


def numerics_fingerprint(info: dict[str, Any]) -> str:
    """12 hex digits over what decides the float kernels: CPU vendor, instruction set and thread count
    (how reductions are split), GPU, CUDA and cuDNN, and the package versions."""
    keys = ("cpu_vendor", "cpu_capability", "threads", "gpu", "cuda", "cudnn", "packages")
    payload = json.dumps({key: info.get(key) for key in keys}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
