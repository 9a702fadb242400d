"""One audit from a composed config (``conf/audit.yaml``): read the sets, run the enabled parts, write
``audit.json``, ``audit.md``, the figures and ``exclude.txt``, print a summary, log to W&B.

The outputs are published together (``cxrsyn.core.fileio.publishing``: a staging folder, ``audit.json``
last) while the folder is locked (``cxrsyn.core.runfolder``): a kill or a full disk leaves the previous
audit as it was."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from cxrsyn.auditing.artifacts import artifacts_figure, class_artifacts
from cxrsyn.auditing.contamination import (
    audit_reference,
    embedding_matches,
    pairs_figure,
    pixel_matches,
    pixel_matches_many,
)
from cxrsyn.auditing.descriptors import CorrelationDescriptor
from cxrsyn.auditing.distance import distances, mean_pairwise_cosine
from cxrsyn.auditing.labels import auditor_scores, grid_figure, label_audit
from cxrsyn.auditing.sets import (
    ImageSet,
    compute_features,
    decode_rows,
    load_images,
    read_set,
    reference_features,
)
from cxrsyn.core.compose import instantiate_node, resolved_config, settings_at
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import publishing, save_figure, write_csv, write_text
from cxrsyn.core.paths import inside
from cxrsyn.core.runfolder import exclusive
from cxrsyn.data.sources import DatasetFolder

AUDIT_JSON, AUDIT_MD, EXCLUDE_NAME = "audit.json", "audit.md", "exclude.txt"
FIGURES = "figures"


def audit(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(cfg.out_dir)
    with exclusive(out_dir, "cxrsyn.audit"), publishing(out_dir, AUDIT_JSON) as publication:
        results, figures = _audit(cfg, publication.staging)
        results = publication.write_manifest(results)
    figures = {name: out_dir / path.relative_to(publication.staging) for name, path in figures.items()}
    _print_summary(results, out_dir)
    _log_to_wandb(cfg, results, figures)
    return results


def _audit(cfg: DictConfig, out_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    started = time.time()
    torch.set_num_threads(max(1, int(cfg.get("num_threads") or os.cpu_count() or 1)))
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved_config(cfg)), out_dir / "config.yaml")
    seed = int(cfg.seed)
    size = int(cfg.image_size)
    workers = cfg.get("workers")
    parts = {
        name: settings_at(cfg, name) for name in ("contamination", "label_audit", "distance", "artifacts")
    }
    enabled = {name: bool(settings.pop("enabled", True)) for name, settings in parts.items()}

    audited = read_set(
        str(cfg.get("name") or _data_name(cfg)), instantiate_node(cfg, "data", _convert_="object"), size
    )
    references = [
        read_set(str(name), instantiate_node(cfg, f"test_sets.{name}", _convert_="object"), size)
        for name in (cfg.get("test_sets") or {})
    ]
    for name, root in (parts["contamination"].get("extra_references") or {}).items():
        references.append(read_set(str(name), DatasetFolder(root=str(root)), size))
    _print_sets(audited, references)
    images = load_images(audited, workers)
    timings = {"read": time.time() - started}

    needs_model = enabled["contamination"] or enabled["distance"] or enabled["label_audit"]
    auditor = instantiate_node(cfg, "auditor") if needs_model else None
    extractor = instantiate_node(cfg, "extractor") if cfg.get("extractor") else auditor
    results: dict[str, Any] = {
        "audited": {"name": audited.name, **audited.summary},
        "references": {ref.name: ref.summary for ref in references},
        "image_size": size,
        "embedding_model": getattr(extractor, "identity", None),
        "auditor": getattr(auditor, "identity", None),
    }
    figures: dict[str, Path] = {}

    timings["models"] = time.time() - started - sum(timings.values())
    coarse, fine = _descriptors(parts["contamination"])
    audited_features = compute_features(images, coarse, fine, extractor) if extractor is not None else None
    reference_data: dict[str, Any] = {}
    thresholds: dict[str, dict[str, float]] = {}
    if enabled["contamination"] or enabled["distance"]:
        for ref in references:
            features, cache = reference_features(
                ref, coarse, fine, extractor, parts["contamination"].get("cache_dir"), workers
            )
            reference_data[ref.name] = features
            results["references"][ref.name]["features_cache"] = cache

    timings["features"] = time.time() - started - sum(timings.values())
    if enabled["contamination"]:
        results["contamination"], thresholds = _contamination(
            audited,
            images,
            audited_features,
            references,
            reference_data,
            parts["contamination"],
            coarse,
            fine,
            seed,
            workers,
            out_dir,
            figures,
        )
        timings["contamination"] = time.time() - started - sum(timings.values())
    if enabled["label_audit"]:
        results["label_audit"] = _labels(
            audited, images, auditor, parts["label_audit"], seed, out_dir, figures
        )
        timings["label_audit"] = time.time() - started - sum(timings.values())
    if enabled["distance"]:
        results["distance"] = _distance(
            audited,
            images,
            audited_features,
            references,
            reference_data,
            parts["distance"],
            thresholds,
            coarse,
            fine,
            parts["contamination"],
            seed,
        )
        timings["distance"] = time.time() - started - sum(timings.values())
    if enabled["artifacts"]:
        result, maps = class_artifacts(images, audited.labels, parts["artifacts"], seed)
        results["artifacts"] = result
        if maps:
            figure = artifacts_figure(maps, result, f"{audited.name}: class means and their difference")
            figures["artifacts"] = _save(figure, out_dir, "artifacts.png")
        timings["artifacts"] = time.time() - started - sum(timings.values())
    results["seconds_by_step"] = {name: round(value, 1) for name, value in timings.items()}
    results["figures"] = {name: str(path.relative_to(out_dir)) for name, path in figures.items()}
    results["seconds"] = round(time.time() - started, 1)
    write_text(out_dir / AUDIT_MD, markdown(results))
    return results, figures


def _data_name(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("data") or "audited")
    return "audited"


def _descriptors(settings: dict[str, Any]) -> tuple[CorrelationDescriptor, CorrelationDescriptor]:
    coarse = dict(settings.get("coarse") or {})
    if "margins" in coarse:
        coarse["margins"] = tuple(coarse["margins"])
    return CorrelationDescriptor(**coarse), CorrelationDescriptor(
        **(settings.get("fine") or {}), margins=(0.0,)
    )


def _save(figure: Figure, out_dir: Path, name: str) -> Path:
    return save_figure(figure, inside(out_dir, Path(FIGURES) / name), dpi=100)


def _contamination(
    audited: ImageSet,
    images: torch.Tensor,
    audited_features: Any,
    references: list[ImageSet],
    reference_data: dict[str, Any],
    settings: dict[str, Any],
    coarse: CorrelationDescriptor,
    fine: CorrelationDescriptor,
    seed: int,
    workers: Any,
    out_dir: Path,
    figures: dict[str, Path],
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    unknown = set(settings["methods"]) - {"pixels", "embedding"}
    if unknown:
        raise CxrsynError(f"contamination.methods has unknown {sorted(unknown)}; use pixels and/or embedding")
    result: dict[str, Any] = {
        "search": "exact: chunked matrix products (torch), no approximate index",
        "by_reference": {},
    }
    flagged: list[dict[str, Any]] = []
    thresholds: dict[str, dict[str, float]] = {}
    audited_pixels = pixel_matches_many(
        images,
        [reference_data[ref.name] for ref in references],
        coarse,
        fine,
        int(settings["candidates"]),
        [ref.patients for ref in references],
        [None] * len(references),
        desc="pixel search",
    )
    for ref, pixels in zip(references, audited_pixels, strict=True):
        rng = np.random.default_rng(seed)
        n_cal = min(int(settings["calibration_n"]), len(ref.table))
        rows = np.sort(rng.choice(len(ref.table), n_cal, replace=False))
        calibration = torch.cat(
            [pixels for _, pixels in decode_rows(ref, rows, workers, f"{ref.name}: calibration sample")]
        )
        outcome = audit_reference(
            audited,
            pixels,
            audited_features,
            ref,
            reference_data[ref.name],
            calibration,
            rows,
            settings,
            coarse,
            fine,
        )
        result["by_reference"][ref.name] = outcome["methods"]
        thresholds[ref.name] = {method: item["threshold"] for method, item in outcome["methods"].items()}
        flagged.extend(outcome["flagged"])
        pairs = []
        for item in sorted(outcome["flagged"], key=lambda f: -f["similarity"])[: int(settings["n_show"])]:
            [reference_image] = [p for _, p in decode_rows(ref, np.array([item["_match_row"]]), 0, "")]
            caption = f"{item['path']} ~ {item['match_path']}\n{item['method']} {item['similarity']:.3f}"
            pairs.append((images[item["_row"], 0].numpy(), reference_image[0, 0].numpy(), caption))
        figure = pairs_figure(
            pairs, f"contamination: flagged audited images (left) and their {ref.name} matches"
        )
        figures[f"contamination_{ref.name}"] = _save(figure, out_dir, f"contamination_{ref.name}.png")
    for item in flagged:
        item.pop("_row")
        item.pop("_match_row")
    result["flagged"] = sorted(flagged, key=lambda f: (-f["similarity"], f["path"]))
    paths = sorted({item["path"] for item in flagged})
    result["n_flagged_images"] = len(paths)
    if settings.get("write_exclude_file", True):
        lines = [
            "# images python -m cxrsyn.audit flagged as near-copies of reference images;",
            "# leave them out of training with data.exclude_file=<this file>",
            *paths,
        ]
        write_text(out_dir / EXCLUDE_NAME, "\n".join(lines) + "\n")
        result["exclude_file"] = EXCLUDE_NAME
    return result, thresholds


def _labels(
    audited: ImageSet,
    images: torch.Tensor,
    auditor: Any,
    settings: dict[str, Any],
    seed: int,
    out_dir: Path,
    figures: dict[str, Path],
) -> dict[str, Any]:
    classes = list(settings["classes"])
    scores = auditor_scores(auditor, images, classes)
    result, per_image = label_audit(audited.table, scores, settings, seed)
    write_csv(out_dir / "label_audit.csv", per_image)
    result["per_image"] = "label_audit.csv"
    rows = {path: i for i, path in enumerate(audited.table["path"].astype(str))}
    shown = result["contradicting"][: int(settings["n_show"])]
    figure = grid_figure(
        [images[rows[item["path"]], 0].numpy() for item in shown],
        [f"label {item['label']}, {result['score_class']} {item['score']:.2f}" for item in shown],
        f"label audit: images whose auditor score contradicts their label, most first ({len(shown)} shown)",
    )
    figures["label_audit"] = _save(figure, out_dir, "label_audit.png")
    return result


def _distance(
    audited: ImageSet,
    images: torch.Tensor,
    audited_features: Any,
    references: list[ImageSet],
    reference_data: dict[str, Any],
    settings: dict[str, Any],
    thresholds: dict[str, dict[str, float]],
    coarse: CorrelationDescriptor,
    fine: CorrelationDescriptor,
    contamination: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    a = audited_features.embeddings
    result: dict[str, Any] = {
        "features": "the embedding model's (see embedding_model); FID is biased upward at small n: compare at equal n",
        "by_reference": {},
    }
    for ref in references:
        r = reference_data[ref.name].embeddings
        entry = {"all": distances(a, r, settings, seed)}
        for label, name in ((1, "pneumonia"), (0, "normal")):
            entry[name] = distances(
                a[audited.labels == label],
                r[ref.labels == label],
                settings,
                seed,
                bool(settings.get("fid_per_class")),
            )
        result["by_reference"][ref.name] = entry
    diversity: dict[str, Any] = {
        "mean_pairwise_cosine": mean_pairwise_cosine(a, seed=seed),
        "reference_mean_pairwise_cosine": {
            ref.name: mean_pairwise_cosine(reference_data[ref.name].embeddings, seed=seed)
            for ref in references
        },
    }
    n = len(images)
    if thresholds and n >= 2:
        ref = references[0]
        self_rows = np.eye(n, dtype=bool)
        audited_refs = type(reference_data[ref.name])(
            coarse.canonical(images).numpy(), audited_features.fine, audited_features.embeddings
        )
        near: dict[str, Any] = {}
        methods = ["embedding", *(["pixels"] if settings.get("pixel_near_duplicates") else [])]
        for method, threshold in thresholds[ref.name].items():
            if method not in methods:
                continue
            if method == "pixels":
                match = pixel_matches(
                    images,
                    audited_refs,
                    coarse,
                    fine,
                    int(contamination["candidates"]),
                    audited.patients,
                    self_rows,
                )
                values = match.distinctiveness
            else:
                centre = reference_data[ref.name].embeddings.mean(axis=0)
                match = embedding_matches(
                    audited_features.embeddings, audited_features.embeddings, centre, self_rows
                )
                values = match.similarity
            above = values > threshold
            pairs = {tuple(sorted((int(i), int(match.index[i])))) for i in np.flatnonzero(above)}
            near[method] = {
                "threshold": threshold,
                "threshold_from": ref.name,
                "n_pairs": len(pairs),
                "share_of_pairs": len(pairs) / (n * (n - 1) / 2),
                "share_of_images_with_a_near_duplicate": float(above.mean()),
                "pairs": [
                    [str(audited.table["path"].iloc[i]), str(audited.table["path"].iloc[j])]
                    for i, j in sorted(pairs)[:50]
                ],
            }
        diversity["near_duplicates"] = near
    result["diversity"] = diversity
    return result


# ------------------------------------------------------------------------------------------------ output
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def _print_sets(audited: ImageSet, references: list[ImageSet]) -> None:
    for role, item in [("audited", audited), *(("reference", ref) for ref in references)]:
        s = item.summary
        excluded = s["found"].get("excluded")
        extra = f", {excluded} excluded by {s['found']['exclude_file']}" if excluded is not None else ""
        skipped = f", {len(s['skipped'])} skipped" if s["skipped"] else ""
        print(
            f"audit: {role} {item.name} from {s['root']}: {s['n']} images ({s['n_pos']} pneumonia / "
            f"{s['n_neg']} normal), {s['patients']} patients{extra}{skipped}"
        )


def markdown(results: dict[str, Any]) -> str:
    a = results["audited"]
    lines = [
        f"# Audit of {a['name']} ({a['root']})",
        "",
        f"{a['n']} images ({a['n_pos']} pneumonia / {a['n_neg']} normal), read at {results['image_size']} px "
        f"(bottom crop {a['crop_bottom_fraction']}). Embeddings: `{results['embedding_model']}`; auditor: "
        f"`{results['auditor']}`. References: "
        + ", ".join(f"{name} ({ref['n']} images)" for name, ref in results["references"].items()),
        "",
    ]
    if "contamination" in results:
        c = results["contamination"]
        lines += [
            "## Contamination",
            "",
            f"Search: {c['search']}. {c['n_flagged_images']} audited image(s) flagged.",
            "",
        ]
        lines += [
            "| reference | method | threshold | rule | audited max | flagged |",
            "|---|---|---|---|---|---|",
        ]
        for name, methods in c["by_reference"].items():
            for method, m in methods.items():
                lines.append(
                    f"| {name} | {method} | {m['threshold']:.4f} | {m['rule']} | "
                    f"{_fmt(m['audited'].get('max'), 4)} | {m['n_flagged']} |"
                )
        if c["flagged"]:
            lines += [
                "",
                "| audited image | reference | match | similarity | method | statistic / threshold |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {f['path']} | {f['test_set']} | {f['match_path']} | {f['similarity']:.4f} | {f['method']} | "
                f"{f['value']:.4g} / {f['threshold']:.4g} |"
                for f in c["flagged"]
            ]
        if c.get("exclude_file"):
            lines += [
                "",
                f"Leave the flagged images out of training: `data.exclude_file={c['exclude_file']}` (its path).",
            ]
        lines.append("")
    if "label_audit" in results:
        la = results["label_audit"]
        lines += ["## Label fidelity", "", la["rule"] + ".", ""]
        lines += [
            "| auditor class | AUROC vs prompt labels | 95% CI | mean (pneumonia prompts) | mean (normal prompts) |",
            "|---|---|---|---|---|",
        ]
        for cls, item in la["auroc_vs_prompt_labels"].items():
            ci = item.get("auroc_ci")
            lines.append(
                f"| {cls} | {_fmt(item['auroc'])} | {'n/a' if not ci else f'{ci[0]:.3f}-{ci[1]:.3f}'} | "
                f"{_fmt(la['scores_by_prompt_class']['pneumonia'][cls]['mean'])} | "
                f"{_fmt(la['scores_by_prompt_class']['normal'][cls]['mean'])} |"
            )
        lines += ["", f"{la['n_contradicting']} image(s) contradict their label; the first:", ""]
        lines += [
            f"- {item['path']} (label {item['label']}, score {item['score']:.3f})"
            for item in la["contradicting"][:20]
        ]
        lines.append("")
    if "distance" in results:
        d = results["distance"]
        lines += ["## Distance to real data and diversity", "", f"Features: {d['features']}.", ""]
        lines += [
            "| reference | subset | n audited | n reference | KID | KID 95% CI | FID (biased) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, entry in d["by_reference"].items():
            for subset, item in entry.items():
                ci = item.get("kid_ci")
                lines.append(
                    f"| {name} | {subset} | {item['n_audited']} | {item['n_reference']} | {_fmt(item['kid'], 4)} | "
                    f"{'n/a' if not ci else f'{ci[0]:.4g} to {ci[1]:.4g}'} | {_fmt(item['fid'], 4)} |"
                )
        div = d["diversity"]
        lines += [
            "",
            f"Mean pairwise cosine similarity of embeddings: audited {_fmt(div['mean_pairwise_cosine'])}; "
            + ", ".join(f"{k} {_fmt(v)}" for k, v in div["reference_mean_pairwise_cosine"].items())
            + ".",
        ]
        for method, item in (div.get("near_duplicates") or {}).items():
            lines.append(
                f"Near-duplicate pairs inside the audited set ({method}, threshold of {item['threshold_from']}): "
                f"{item['n_pairs']} ({item['share_of_pairs']:.2%} of pairs)."
            )
        lines.append("")
    if "artifacts" in results:
        art = results["artifacts"]
        lines += ["## Class-linked artifacts", ""]
        if "skipped" in art:
            lines += [art["skipped"], ""]
        else:
            lines += [art["rule"] + ".", ""]
            lines += [
                "| region | share of class-difference energy | share of area | permutation p | flagged |",
                "|---|---|---|---|---|",
            ]
            for name, item in [("bottom_band", art["bottom_band"]), *art["corners"].items()]:
                lines.append(
                    f"| {name} | {item['share']:.3f} | {item['area_share']:.3f} | {item['permutation_p']:.4f} | "
                    f"{'yes' if item['flagged'] else 'no'} |"
                )
            region = art["strongest_region"]
            if region:
                box = ", ".join(f"{v:.2f}" for v in region["box"])
                lines += [
                    "",
                    f"Strongest class-linked region: box ({box}) ({region['box_format']}), {region['sign']}, "
                    f"{'inside' if region['inside_bottom_band'] else 'not inside'} the bottom band.",
                ]
            lines.append("")
    if results["figures"]:
        lines += (
            ["## Figures", ""] + [f"![{name}]({path})" for name, path in results["figures"].items()] + [""]
        )
    return "\n".join(lines)


def _print_summary(results: dict[str, Any], out_dir: Path) -> None:
    print("")
    if "contamination" in results:
        c = results["contamination"]
        print(
            f"contamination: {c['n_flagged_images']} audited image(s) flagged as near-copies of reference images"
        )
        for name, methods in c["by_reference"].items():
            for method, m in methods.items():
                print(
                    f"  {name} {method}: threshold {m['threshold']:.4g}, audited max {_fmt(m['audited'].get('max'), 4)}, "
                    f"flagged {m['n_flagged']}"
                )
    if "label_audit" in results:
        la = results["label_audit"]
        aurocs = ", ".join(f"{k} {_fmt(v['auroc'])}" for k, v in la["auroc_vs_prompt_labels"].items())
        print(
            f"label fidelity: auditor AUROC vs prompt labels: {aurocs}; {la['n_contradicting']} image(s) contradict their label"
        )
    if "distance" in results:
        for name, entry in results["distance"]["by_reference"].items():
            item = entry["all"]
            ci = item.get("kid_ci")
            print(
                f"distance to {name}: KID {_fmt(item['kid'], 4)}"
                + (f" ({ci[0]:.4g} to {ci[1]:.4g})" if ci else "")
                + f", FID (biased) {_fmt(item['fid'], 4)}"
            )
    if "artifacts" in results and "bottom_band" in results["artifacts"]:
        art = results["artifacts"]
        print(
            f"artifacts: bottom-band share of class-difference energy {art['bottom_band_share']:.3f} "
            f"(p {art['bottom_band']['permutation_p']:.4f}); flagged: {', '.join(art['flagged']) or 'nothing'}"
        )
    print(
        f"audit: {out_dir / AUDIT_JSON}, {out_dir / AUDIT_MD}, figures in {out_dir / FIGURES} ({results['seconds']} s)"
    )


def _log_to_wandb(cfg: DictConfig, results: dict[str, Any], figures: dict[str, Path]) -> None:
    loggers = cfg.get("logger") or {}
    for name, node in loggers.items():
        if not node or "wandb" not in str(node.get("_target_", "")):
            continue
        import wandb

        logger = instantiate_node(cfg, f"logger.{name}", job_type="audit")
        run = logger.experiment
        run.config.update(resolved_config(cfg), allow_val_change=True)
        run.summary.update(_flat(results))
        run.log({f"audit/{key}": wandb.Image(str(path)) for key, path in figures.items()})
        if "contamination" in results and results["contamination"]["flagged"]:
            import pandas as pd

            run.log(
                {"audit/flagged": wandb.Table(dataframe=pd.DataFrame(results["contamination"]["flagged"]))}
            )
        run.finish()


def _flat(value: Any, key: str = "audit") -> dict[str, float]:
    flat: dict[str, float] = {}
    if isinstance(value, bool) or value is None:
        return flat
    if isinstance(value, (int, float)):
        return {key: float(value)}
    if isinstance(value, dict):
        for name, item in value.items():
            flat.update(_flat(item, f"{key}/{name}"))
    return flat
