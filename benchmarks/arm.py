"""One arm of the study at the paper's scale on phantom stand-ins: train on 300 generator-like images and test
on RSNA-sized and Kermany-sized real-like sets read from the decode-once cache, with the paper's ResNet-50 at
224 px, through the same config, DataModule and Lightning loop as ``python -m cxrsyn.train``.

Prints training and evaluation images/s and their ratio to a bound measured in the same run, on the same
device: the model alone on tensors already on the device (a forward, backward and optimiser step for
training; a forward pass in inference mode for evaluation). A ratio near 1 means data loading and the
pipeline cost nothing beside the model.

    python benchmarks/arm.py --quick                   # minutes on 2 CPU cores
    python benchmarks/arm.py --device cuda             # the full arm: 14,864 + 5,856 test images, bf16-mixed

Sizes (full): 150 + 150 training images, 7,432 + 7,432 "rsna" (the paper's 14,863, rounded up to two equal
classes) and 2,928 + 2,928 "kermany" (5,856) test images, 10 epochs. The phantom sets and their caches are
built on first use under --data-dir and reused; that build is timed apart and is not in the ratios.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cxrsyn.core.compose import build_datamodule, instantiate_node
from cxrsyn.core.config import compose_or_exit

FULL = {"train_per_class": 150, "rsna_per_class": 7432, "kermany_per_class": 2928, "epochs": 10}
QUICK = {"train_per_class": 150, "rsna_per_class": 250, "kermany_per_class": 150, "epochs": 2}


def overrides(args: argparse.Namespace, sizes: dict[str, int], data_dir: Path) -> list[str]:
    cuda = args.device == "cuda"
    return [
        "+experiment=crop_ablation",
        "source=phantom",
        "hydra.mode=RUN",
        "data=synthetic_cropped",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={data_dir / 'run'}",
        "model.backbone=resnet50",
        "model.pretrained=false",  # no hub here; the cost is the same as with ImageNet weights
        "datamodule.image_size=224",
        f"datamodule.batch_size={args.batch_size}",
        f"datamodule.num_workers={args.workers}",
        f"data.phantom.n_per_class={sizes['train_per_class']}",
        f"test_sets.rsna.phantom.n_per_class={sizes['rsna_per_class']}",
        f"test_sets.kermany.phantom.n_per_class={sizes['kermany_per_class']}",
        f"trainer={'gpu' if cuda else 'cpu'}",
        "experiment.held_equal=epochs",  # the benchmark counts epochs, not the study's step budget
        "trainer.max_steps=-1",
        f"trainer.max_epochs={sizes['epochs']}",
        "trainer.enable_progress_bar=false",
        f"num_threads={args.threads or 'null'}",
    ]


def model_bounds(
    model: torch.nn.Module, device: str, batch_size: int, size: int, steps: int
) -> dict[str, float]:
    """Images/s of the model alone on random tensors already on the device: training steps and inference."""
    model = model.to(device)
    images = torch.rand(batch_size, 1, size, size, device=device)
    labels = torch.randint(0, 2, (batch_size,), device=device).float()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def run(train: bool) -> float:
        model.train(train)
        for step in range(steps + 1):  # the first step warms up (allocator, cuDNN autotuning)
            if step == 1:
                if device == "cuda":
                    torch.cuda.synchronize()
                started = time.perf_counter()
            if train:
                with autocast:
                    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(images), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            else:
                with torch.inference_mode(), autocast:
                    model(images)
        if device == "cuda":
            torch.cuda.synchronize()
        return steps * batch_size / (time.perf_counter() - started)

    return {"train": run(True), "eval": run(False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small arm for a CPU: minutes on 2 cores")
    parser.add_argument(
        "--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers (default: 4 with cuda; 0 on a CPU, where workers take cores from the model "
        "and the cached images need no decoding)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="phantom sets and caches (kept for reuse)"
    )
    args = parser.parse_args()
    if args.workers is None:
        args.workers = 4 if args.device == "cuda" else 0
    sizes = QUICK if args.quick else FULL
    data_dir = (
        args.data_dir or Path(tempfile.gettempdir()) / f"cxrsyn-arm-{'quick' if args.quick else 'full'}"
    )
    cfg = compose_or_exit("train", overrides(args, sizes, data_dir))
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()  # phantom sets and caches: built once, then reused
    datamodule.setup("fit")
    prepare_s = time.perf_counter() - started
    n_train = len(datamodule.dataset("train"))
    n_test = sum(len(datamodule.dataset(f"test/{name}")) for name in datamodule.test_set_names)

    model = instantiate_node(cfg, "model")
    trainer = instantiate_node(cfg, "trainer", logger=False, callbacks=[], enable_checkpointing=False)
    started = time.perf_counter()
    trainer.fit(model, datamodule=datamodule)
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    trainer.test(model, datamodule=datamodule, verbose=False)
    test_s = time.perf_counter() - started

    size = int(cfg.datamodule.image_size)
    bounds = model_bounds(
        instantiate_node(cfg, "model"), args.device, int(cfg.datamodule.batch_size), size, steps=10
    )
    # fit time includes one validation pass per epoch over the validation split: count those images too
    n_val = len(datamodule.dataset("val"))
    train_rate = sizes["epochs"] * n_train / max(1e-9, fit_s - sizes["epochs"] * n_val / bounds["eval"])
    eval_rate = n_test / test_s
    result = {
        "device": torch.cuda.get_device_name()
        if args.device == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "precision": str(cfg.trainer.precision),
        "backbone": cfg.model.backbone,
        "image_size": size,
        "train_images": n_train,
        "epochs": sizes["epochs"],
        "test_images": n_test,
        "prepare_s": round(prepare_s, 1),
        "fit_s": round(fit_s, 1),
        "test_s": round(test_s, 1),
        "train_images_per_s": round(train_rate, 1),
        "model_only_train_images_per_s": round(bounds["train"], 1),
        "train_ratio": round(train_rate / bounds["train"], 3),
        "eval_images_per_s": round(eval_rate, 1),
        "model_only_eval_images_per_s": round(bounds["eval"], 1),
        "eval_ratio": round(eval_rate / bounds["eval"], 3),
        "arm_s_without_prepare": round(fit_s + test_s, 1),
    }
    print(
        f"arm: {n_train} training images x {sizes['epochs']} epochs in {fit_s:.1f} s, {n_test} test images in {test_s:.1f} s"
    )
    print(
        f"training   {train_rate:8.1f} images/s vs model only {bounds['train']:8.1f}: ratio {result['train_ratio']:.3f}"
    )
    print(
        f"evaluation {eval_rate:8.1f} images/s vs model only {bounds['eval']:8.1f}: ratio {result['eval_ratio']:.3f}"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
