"""A study's figures: every run's ROC and PR curves, each arm's Grad-CAM grid, and the metric against a
numeric arm with its study-level band."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cxrsyn.core.fileio import compact_png, save_figure
from cxrsyn.core.paths import inside
from cxrsyn.reporting.markdown import fmt
from cxrsyn.reporting.runs import Study


def plot_curves(study: Study, out_dir: Path) -> list[Path]:
    """``roc_<set>.png`` and ``pr_<set>.png``: every run's curve, one colour per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cxrsyn.evaluation.metrics import pr_curve, roc_curve

    written = []
    colours = {arm: plt.get_cmap("tab10")(i % 10) for i, arm in enumerate(study.arms)}
    for name in study.test_sets:
        for kind, curve, axes_labels in (
            ("roc", roc_curve, ("false positive rate", "true positive rate")),
            ("pr", pr_curve, ("recall", "precision")),
        ):
            figure, axes = plt.subplots(figsize=(5.5, 5))
            for arm in study.arms:
                for i, run in enumerate(study.of_arm(arm)):
                    if name not in run.metrics["test_sets"]:
                        continue
                    table = run.predictions(name)
                    x, y = curve(table["label"].to_numpy(), table["prob"].to_numpy())
                    if kind == "pr":
                        x, y = y, x  # recall on the x axis
                    score = run.metrics["test_sets"][name]["auroc" if kind == "roc" else "aupr"]
                    label = (
                        f"{arm} (seed {run.seed}: {score:.3f})"
                        if i == 0 or len(study.of_arm(arm)) < 4
                        else None
                    )
                    axes.plot(x, y, color=colours[arm], alpha=0.8, lw=1.2, label=label)
            if kind == "roc":
                axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
            axes.set(xlabel=axes_labels[0], ylabel=axes_labels[1], xlim=(0, 1), ylim=(0, 1.02))
            axes.set_title(f"{name}: {kind.upper()} ({_source_note(study)})", fontsize=10)
            axes.legend(fontsize=7, loc="lower right" if kind == "roc" else "lower left")
            written.append(_save(figure, out_dir / f"{kind}_{name}.png", dpi=120))
    return written


def gradcam_figure(study: Study, out_dir: Path) -> list[Path]:
    """``gradcam_<set>.png``: the Grad-CAM grid of each arm's first seed, one arm per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    written = []
    for name in study.test_sets:
        panels = []
        for arm in study.arms:
            run = study.of_arm(arm)[0]
            grid = (run.metrics.get("gradcam") or {}).get(name, {}).get("grid")
            if grid and inside(run.folder, grid).is_file():
                share = run.metrics["gradcam"][name]["bottom_band_share"]["mean"]
                panels.append(
                    (f"{arm} (seed {run.seed}); CAM share in bottom band {fmt(share, 2)}", run.folder / grid)
                )
        if not panels:
            continue
        images = [np.asarray(Image.open(path).convert("RGB")) for _, path in panels]
        # one arm per row, each grid at its own pixel size (side by side, every tile shrank to a few pixels)
        width = max(image.shape[1] for image in images) / 100
        heights = [image.shape[0] / 100 + 0.35 for image in images]
        figure, axes = plt.subplots(
            len(images), 1, figsize=(width, sum(heights) + 0.4), gridspec_kw={"height_ratios": heights}
        )
        for axis, (title, _), image in zip(np.atleast_1d(axes), panels, images, strict=True):
            axis.imshow(image)
            axis.set_title(title, fontsize=12)
            axis.axis("off")
        figure.suptitle(f"Grad-CAM on {name} ({_source_note(study)})", fontsize=13)
        # the report's copy is compacted to commit-friendly size; each run folder keeps its full-size grid
        written.append(compact_png(_save(figure, out_dir / f"gradcam_{name}.png", dpi=100)))
    return written


def plot_arm_curves(points: Sequence[dict[str, Any]], study: Study, out_dir: Path) -> list[Path]:
    """``scaling_<set>.png``: AUROC and AUPR against the arm value, one line per group of the other
    overrides, the study-level 95% CI as a band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name in dict.fromkeys(point["test_set"] for point in points):
        figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for axis, metric in zip(axes, ("auroc", "aupr"), strict=True):
            for line in dict.fromkeys(p["line"] for p in points if p["test_set"] == name):
                mine = [p for p in points if p["test_set"] == name and p["line"] == line]
                x = [p["value"] for p in mine]
                axis.plot(x, [p[metric] for p in mine], marker="o", label=line)
                # one seed: the band is the interval conditional on the trained model (results.md marks it)
                bands = [p[f"{metric}_ci"] or p[f"conditional_{metric}_ci"] for p in mine]
                axis.fill_between(x, [b[0] for b in bands], [b[1] for b in bands], alpha=0.2)
            axis.set(xlabel=mine[0]["key"], ylabel=f"{metric.upper()} (mean over seeds, 95% CI)")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=7)
        figure.suptitle(f"{name}: metric against {mine[0]['key']} ({_source_note(study)})", fontsize=11)
        written.append(_save(figure, out_dir / f"scaling_{name}.png", dpi=110))
    return written


def _save(figure: Any, path: Path, dpi: int) -> Path:
    figure.tight_layout()
    return save_figure(figure, inside(path.parent, path.name), dpi=dpi)


def _source_note(study: Study) -> str:
    return "PHANTOM stand-ins, not evidence" if study.is_phantom else "real test data"
