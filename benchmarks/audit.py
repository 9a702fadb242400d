"""The audit at the paper's scale on phantom stand-ins: 300 generator-like images (150 + 150) against one
5,000-image real-like reference set, every part (contamination, label fidelity, distance, artifacts and
realism), through the same config and code as ``python -m cxrsyn.audit source=phantom``.

Runs the audit twice with one cache folder. *Cold*: the reference set met for the first time, so its
preparation is timed too (its descriptors and embeddings, and the contamination calibration: 1,999 reference
films searched like audited ones); both are cached per reference set. *Warm*: a second audited set against
the same, prepared, reference set: what every further audit costs. The target (under 5 minutes on 2 CPU
cores) is for the warm audit; the cold one is printed beside it. Each prints its seconds and CPU seconds
(what it costs whatever else the machine runs), and the warm audit its ratio to a bound measured in the same
run: the seconds the bare model passes it needs would take, the realism CNN's training steps and forward
passes (as many as the audit makes, at its image and batch size) and the auditor's embeddings of the
audited set, each timed on tensors already in memory. A ratio near 1 means the audit adds little to the
models it runs; the rest is decoding, the contamination search and the statistics. The phantom auditor is a
pixel model; the last line says what torchxrayvision's DenseNet-121 (the default auditor on real data) would
add at its bare rate, once per reference set (then cached).

    python benchmarks/audit.py                 # 300 vs 5,000 (the phantom sets are built once, not timed)
    python benchmarks/audit.py --quick         # 300 vs 1,000
    python benchmarks/audit.py --threads 2     # as on a 2-core machine
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from cxrsyn.auditing.realism import RealismSettings, _Detector
from cxrsyn.core.compose import instantiate_node, settings_at
from cxrsyn.core.config import compose_or_exit

REFERENCE_PER_CLASS = {"full": 2500, "quick": 500}


def overrides(data_dir: Path, per_class: int, out_dir: Path, threads: int) -> list[str]:
    return [
        "source=phantom",
        "data=synthetic_raw",
        "test_sets=[rsna]",
        f"test_sets.rsna.phantom.n_per_class={per_class}",
        f"paths.data_dir={data_dir}",
        f"paths.cache_dir={out_dir / 'cache'}",  # a fresh cache: reference features are built, as the first time
        f"out_dir={out_dir}",
        f"num_threads={threads or 'null'}",
    ]


def cpu_seconds() -> float:
    """User and system CPU seconds of this process and its finished children (decoding workers): the
    compute the audit needs, whatever else the machine runs."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(step, repeats: int) -> float:  # noqa: ANN001 - a callable
    step()  # warm-up: allocator, thread pool
    started = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - started) / repeats


def cnn_rates(settings: RealismSettings) -> dict[str, float]:
    """Images/s of the realism detector alone: training steps and inference, on random tensors."""
    c = settings.cnn
    detector = _Detector(c)
    optimizer = torch.optim.AdamW(detector.parameters(), lr=c.lr)
    images = torch.rand(c.batch_size, 1, c.image_size, c.image_size)
    targets = torch.randint(0, 2, (c.batch_size,)).float()

    def train_step() -> None:
        loss = torch.nn.functional.binary_cross_entropy_with_logits(detector(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    detector.train()
    train = c.batch_size / timed(train_step, 20)
    detector.eval()
    batch = torch.rand(256, 1, c.image_size, c.image_size)
    with torch.inference_mode():
        infer = 256 / timed(lambda: detector(batch), 5)
    return {"train": train, "infer": infer}


def embed_rate(model, size: int, batch_size: int = 32) -> float:  # noqa: ANN001 - an auditor
    images = torch.rand(batch_size, 1, size, size)
    return batch_size / timed(lambda: model.embed(images), 3)


def xrv_rate(batch_size: int = 16) -> float:
    """torchxrayvision's DenseNet-121 (random weights: the cost is the same) at 224 px, embeddings/s."""
    import torchxrayvision as xrv

    model = xrv.models.DenseNet(weights=None, num_classes=18).eval()
    images = torch.rand(batch_size, 1, 224, 224) * 2048 - 1024
    with torch.no_grad():
        return batch_size / timed(lambda: model.features2(images), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 1,000-image reference set")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all cores)")
    parser.add_argument("--data-dir", type=Path, default=None, help="phantom sets (kept for reuse)")
    args = parser.parse_args()
    size_name = "quick" if args.quick else "full"
    data_dir = args.data_dir or Path(tempfile.gettempdir()) / f"cxrsyn-audit-bench-{size_name}"
    out_dir = Path(tempfile.mkdtemp(prefix="cxrsyn-audit-bench-out-"))
    cfg = compose_or_exit("audit", overrides(data_dir, REFERENCE_PER_CLASS[size_name], out_dir, args.threads))
    if args.threads:
        torch.set_num_threads(args.threads)

    started = time.perf_counter()  # the phantom sets and the phantom auditor's own set: built once, not timed
    for key in ("data", "test_sets.rsna"):
        instantiate_node(cfg, key, _convert_="object").prepare()
    auditor = instantiate_node(cfg, "auditor")
    prepare_s = time.perf_counter() - started

    from cxrsyn.auditing.run import audit

    timings = {}
    for run in ("cold", "warm"):
        cfg.out_dir = str(out_dir / run)
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        results = audit(cfg)
        timings[run] = (time.perf_counter() - started, cpu_seconds() - cpu_before, results["seconds_by_step"])
    audit_s, audit_cpu_s, by_step = timings["warm"]

    settings = RealismSettings.from_section(settings_at(cfg, "realism"))
    n_audited = results["audited"]["n"]
    n_reference = results["references"]["rsna"]["n"]
    realism = results["realism"]["rsna"]
    n_pair = realism["n_audited"] + realism["n_reference"]
    crops = len(settings.crop_fractions)
    # each image is in the training set of folds - 1 folds; scored once; the audited ones occluded per region
    train_passes = crops * (settings.folds - 1) * n_pair * settings.cnn.epochs
    infer_passes = crops * (n_pair + realism["n_audited"] * 5)
    embed_passes = n_audited  # the warm audit embeds the audited set only
    rates = cnn_rates(settings)
    auditor_rate = embed_rate(auditor, int(cfg.image_size))
    bound_s = train_passes / rates["train"] + infer_passes / rates["infer"] + embed_passes / auditor_rate
    xrv_s = (n_audited + n_reference) / xrv_rate()
    result = {
        "threads": torch.get_num_threads(),
        "audited": n_audited,
        "reference": n_reference,
        "prepare_s": round(prepare_s, 1),
        "cold_audit_s": round(timings["cold"][0], 1),
        "cold_audit_cpu_s": round(timings["cold"][1], 1),
        "cold_seconds_by_step": timings["cold"][2],
        "audit_s": round(audit_s, 1),
        "audit_cpu_s": round(audit_cpu_s, 1),
        "seconds_by_step": by_step,
        "cnn_train_passes": train_passes,
        "cnn_infer_passes": infer_passes,
        "cnn_train_images_per_s": round(rates["train"], 1),
        "cnn_infer_images_per_s": round(rates["infer"], 1),
        "auditor_embeddings": embed_passes,
        "auditor_embeddings_per_s": round(auditor_rate, 1),
        "bound_s": round(bound_s, 1),
        "ratio": round(bound_s / audit_s, 3),
        "xrv_densenet_embeddings_s": round(xrv_s, 1),
        "realism_auroc": {name: realism[name]["auroc"] for name in settings.detectors},
    }
    cold_s, cold_cpu_s, cold_steps = timings["cold"]
    print(
        f"cold audit (reference set prepared and cached on the way) of {n_audited} images against "
        f"{n_reference}: {cold_s:.1f} s, {cold_cpu_s:.1f} CPU seconds; by step: {cold_steps}"
    )
    print(
        f"warm audit (reference set prepared) of {n_audited} images against {n_reference}: {audit_s:.1f} s on "
        f"{result['threads']} thread(s), {audit_cpu_s:.1f} CPU seconds (target < 300 s on 2 cores); by step: "
        f"{by_step}"
    )
    print(
        f"bare model passes: {train_passes} CNN training ({rates['train']:.0f}/s), {infer_passes} CNN forward "
        f"({rates['infer']:.0f}/s), {embed_passes} auditor embeddings ({auditor_rate:.0f}/s) = {bound_s:.1f} s; "
        f"ratio {result['ratio']:.3f}"
    )
    print(
        f"with torchxrayvision's DenseNet-121 as the auditor, its {n_audited + n_reference} embeddings (cold) take "
        f"{xrv_s:.0f} s at its bare rate (once per reference set; cached after)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
