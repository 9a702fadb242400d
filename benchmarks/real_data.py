"""Benchmark the real-data path on generated RSNA-format data (1024x1024 JPEG-baseline DICOMs).

(a) decode-once cache build, images/s in one process, over the bound measured in the same run: Pillow
    draft-mode decode of the same JPEG bytes (already in memory) plus a resize to the cache size;
(b) evaluation throughput reading from the cache (Lightning's test loop over CXRDataModule, as
    ``python -m cxrsyn.evaluate`` runs it), over model-only throughput: the same model and batch size on
    random tensors already in memory.

    python benchmarks/real_data.py [--images 192] [--image-size 224] [--backbone resnet18] [--batch-size 32]

The last two lines are the ratios (targets: a >= 0.5, b >= 0.9); exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import Callback, Trainer
from PIL import Image

from cxrsyn.data.cache import build_cache
from cxrsyn.data.datamodule import CXRDataModule
from cxrsyn.data.decode import Preprocessing
from cxrsyn.data.dicom import jpeg_baseline_frame, read_dataset
from cxrsyn.data.rsna import RSNA
from cxrsyn.data.sources import BadFiles
from cxrsyn.models.classifier import PneumoniaClassifier
from cxrsyn.testing.datasets.rsna import rsna_patients, write_rsna_root

TARGET_CACHE, TARGET_EVAL = 0.5, 0.9


def pillow_bound(jpegs: list[bytes], size: int) -> float:
    started = time.perf_counter()
    for data in jpegs:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", (size, size))
            image.resize((size, size), Image.Resampling.BOX)
    return len(jpegs) / (time.perf_counter() - started)


def cache_build(source: RSNA, prep: Preprocessing, cache_dir: Path) -> float:
    index = source.index()
    started = time.perf_counter()
    build_cache(
        index.table,
        prep,
        cache_dir,
        "rsna",
        BadFiles("error", "rsna"),
        source.root,
        workers=1,
        show_progress=False,
    )
    return len(index.table) / (time.perf_counter() - started)


class TestTimer(Callback):
    def on_test_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.started = time.perf_counter()

    def on_test_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self.seconds = time.perf_counter() - self.started


def evaluation(model: PneumoniaClassifier, source: RSNA, size: int, batch_size: int) -> float:
    datamodule = CXRDataModule(
        test_sets={"rsna": source}, image_size=size, batch_size=batch_size, num_workers=0
    )
    datamodule.prepare_data()  # the cache exists already: this finds it
    timer = TestTimer()
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[timer],
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(model, datamodule=datamodule, verbose=False)
    return len(model.test_predictions["rsna"].probs) / timer.seconds


def model_only(model: PneumoniaClassifier, n: int, size: int, batch_size: int) -> float:
    batches = [torch.rand(min(batch_size, n - start), 1, size, size) for start in range(0, n, batch_size)]
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for batch in batches:
            torch.sigmoid(model(batch))
    return n / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n_opacity = args.images // 2
        root = write_rsna_root(
            tmp / "rsna", rsna_patients(args.images - n_opacity, n_opacity, 0), image_size=1024
        )
        files = sorted((root / "stage_2_train_images").glob("*.dcm"))
        jpegs = [jpeg_baseline_frame(read_dataset(file)) for file in files]
        mean_kb = np.mean([file.stat().st_size for file in files]) / 1024
        print(
            f"data: {len(files)} RSNA-format DICOMs, 1024x1024 JPEG baseline, {mean_kb:.0f} KiB each on average"
        )
        prep = Preprocessing(image_size=args.image_size)

        bound_rates, cache_rates = [], []
        for repeat in range(args.repeats):  # interleaved, so both see the same machine state
            bound_rates.append(pillow_bound(jpegs, args.image_size))
            cache_rates.append(
                cache_build(RSNA(root=str(root), show_progress=False, workers=1), prep, tmp / f"c{repeat}")
            )
        bound, cache = statistics.median(bound_rates), statistics.median(cache_rates)
        print(f"(a) Pillow draft decode + resize (bound): {bound:.0f} images/s")
        print(f"(a) cache build, one process:            {cache:.0f} images/s")

        source = RSNA(root=str(root), cache=True, cache_dir=str(tmp / "c0"), show_progress=False, workers=1)
        model = PneumoniaClassifier(backbone=args.backbone, pretrained=False)
        model_only(
            model, args.batch_size, args.image_size, args.batch_size
        )  # warm-up: first-call allocations
        model_rates, eval_rates = [], []
        for _ in range(args.repeats):
            model_rates.append(model_only(model, len(files), args.image_size, args.batch_size))
            eval_rates.append(evaluation(model, source, args.image_size, args.batch_size))
        model_rate, eval_rate = statistics.median(model_rates), statistics.median(eval_rates)
        print(
            f"(b) model only, {args.backbone} batch {args.batch_size} at {args.image_size} px: {model_rate:.1f} images/s"
        )
        print(f"(b) evaluation from the cache:           {eval_rate:.1f} images/s")
        print(f"torch threads: {torch.get_num_threads()}")
    cache_ratio, eval_ratio = cache / bound, eval_rate / model_rate
    print(f"cache_build_ratio={cache_ratio:.2f} (target >= {TARGET_CACHE})")
    print(f"evaluation_ratio={eval_ratio:.2f} (target >= {TARGET_EVAL})")
    return 0 if cache_ratio >= TARGET_CACHE and eval_ratio >= TARGET_EVAL else 1


if __name__ == "__main__":
    sys.exit(main())
