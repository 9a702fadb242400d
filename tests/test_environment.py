"""The environment recorded with every run: what it reads, and which fields decide bit-reproducibility."""

from __future__ import annotations

import platform
from importlib import metadata

import torch

from cxrsyn.core.environment import environment, numerics_fingerprint


def test_environment_reads_torch_and_the_installed_packages():
    info = environment()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["threads"] == torch.get_num_threads()
    assert info["python"] == platform.python_version()
    assert info["packages"]["torch"] == metadata.version("torch")
    assert info["packages"]["timm"] == metadata.version("timm")
    assert info["gpu"] is None or isinstance(info["gpu"], str)
    assert len(info["numerics"]) == 12 and info["numerics"] == numerics_fingerprint(info)


def test_the_fingerprint_follows_what_changes_float_kernels_only():
    info = environment()
    same = {**info, "python": "3.99.0", "platform": "elsewhere", "cpu": "another name of the same chip"}
    assert numerics_fingerprint(same) == info["numerics"]
    for key, value in [
        ("cpu_capability", "AVX512" if info["cpu_capability"] != "AVX512" else "AVX2"),
        ("cpu_vendor", "GenuineIntel" if info["cpu_vendor"] != "GenuineIntel" else "AuthenticAMD"),
        ("threads", info["threads"] + 1),
        ("gpu", "NVIDIA H100 80GB HBM3"),
        ("packages", {**info["packages"], "torch": "0.0.1"}),
    ]:
        assert numerics_fingerprint({**info, key: value}) != info["numerics"], key
