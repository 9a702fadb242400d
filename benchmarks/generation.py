"""Benchmark Nano Banana generation throughput against a local Gemini-format server with a fixed latency.

    python benchmarks/generation.py [--images 300] [--latency 0.3] [--concurrency 8]

The real google-genai client, our retries, the crash-safe store and the manifest, all included; the server
answers every request after ``latency`` seconds. Ideal throughput = concurrency / latency. The last line
is achieved / ideal (target >= 0.8); exit status 1 when it is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from hydra import compose, initialize_config_dir

from cxrsyn.core.config import CONF_DIR
from cxrsyn.core.manifest import read_manifest
from cxrsyn.generate.run import generate
from cxrsyn.testing.fake_gemini import FakeGemini

TARGET = 0.8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--latency", type=float, default=0.3)
    parser.add_argument("--concurrency", type=int, default=None, help="default: the config's")
    args = parser.parse_args()
    os.environ.setdefault("GEMINI_API_KEY", "benchmark-key")
    with tempfile.TemporaryDirectory() as out, FakeGemini(latency_s=args.latency, image_size=256) as server:
        overrides = [
            "generator=nano_banana",  # the paper's model: no draft images, comparable with earlier runs
            f"out_dir={out}",
            f"generator.n_per_class={args.images // 2}",
            f"generator.base_url={server.url}",
            "generator.show_progress=false",
        ]
        if args.concurrency:
            overrides.append(f"generator.concurrency={args.concurrency}")
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="generate", overrides=overrides)
        concurrency = int(cfg.generator.concurrency)
        started = time.perf_counter()
        generate(cfg)
        seconds = time.perf_counter() - started
        kept = len(read_manifest(out))
    achieved = kept / seconds
    ideal = concurrency / args.latency
    print(f"{kept} images in {seconds:.2f} s at concurrency {concurrency}, server latency {args.latency} s")
    print(f"achieved {achieved:.1f} images/s, ideal {ideal:.1f} images/s")
    print(f"generation_ratio={achieved / ideal:.2f} (target >= {TARGET})")
    return 0 if achieved / ideal >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
