"""An audit's results for people: ``audit.md`` and the printed summary, made from what ``audit.json`` holds,
and the same results, figures and flagged images logged to W&B. Nothing here computes a result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cxrsyn.auditing.sets import ImageSet
from cxrsyn.core.compose import instantiate_node, resolved_config


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-2 and value != 0 else f"{value:.{digits}f}"
    return str(value)


def print_sets(audited: ImageSet, references: list[ImageSet]) -> None:
    """What was read from each set: images, classes, patients, excluded and skipped files."""
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
    """``audit.md`` from what ``audit.json`` holds."""
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


def print_summary(results: dict[str, Any]) -> None:
    """The parts' headline numbers, printed after the audit."""
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


def log_to_wandb(cfg: DictConfig, results: dict[str, Any], figures: dict[str, Path]) -> None:
    """Results (as a flat summary), figures and the flagged images to each W&B logger of the config."""
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
