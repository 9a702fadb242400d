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
            f"Search: {c['search']}. {c['n_flagged_images']} audited image(s) flagged. Each threshold is set for "
            f"a per-image false-positive rate of {c['false_positive_rate']:g} (or the rate its calibration "
            f"allows): about {c['expected_false_flags']:.2f} false flag(s) expected among clean images over all "
            "reference sets and methods.",
            "",
            *(f"- {note}" for note in c.get("notes", [])),
            *([""] if c.get("notes") else []),
        ]
        lines += [
            "| reference | method | threshold | rule | audited max | flagged | expected false flags |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, methods in c["by_reference"].items():
            for method, m in methods.items():
                lines.append(
                    f"| {name} | {method} | {_fmt(m['threshold'], 4)} | {m['rule']} | "
                    f"{_fmt(m['audited'].get('max'), 4)} | {m['n_flagged']} | {m['expected_false_flags']:.2f} |"
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
        lines += _label_yardstick(la)
        lines += ["", f"{la['n_contradicting']} image(s) contradict their label; the first:", ""]
        lines += [
            f"- {item['path']} (label {item['label']}, score {item['score']:.3f})"
            for item in la["contradicting"][:20]
        ]
        lines.append("")
    if "attributes" in results:
        lines += attributes_markdown(results["attributes"])
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
        lines += spaces_markdown(d.get("spaces") or {})
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
    if "realism" in results:
        lines += realism_markdown(results["realism"])
    if results["figures"]:
        lines += (
            ["## Figures", ""] + [f"![{name}]({path})" for name, path in results["figures"].items()] + [""]
        )
    return "\n".join(lines)


def _ci(interval: list[float] | None, digits: int = 2) -> str:
    return "n/a" if not interval else f"{interval[0]:.{digits}f}-{interval[1]:.{digits}f}"


def realism_markdown(realism: dict[str, Any]) -> list[str]:
    """The realism part: per reference, detector and crop fraction the out-of-fold AUROC and, for the CNN,
    where its score comes from (region occlusion); the statistics detector's feature families alone."""
    regions = ("bottom_band", "top_band", "borders", "lungs", "other")
    lines = ["## Realism: can the set be told from real films, and where?", ""]
    for name, entry in realism.items():
        detectors = [d for d in ("cnn", "statistics") if d in entry]
        lines += [
            f"**{name}**: {entry['reference_sample']}; groups {entry['groups']}; {entry['folds']}-fold grouped "
            f"cross-validation; reference films {'cut like the audited ones' if entry['crop_reference'] else 'whole'}.",
            "",
            "| detector | bottom crop | AUROC | 95% CI | "
            + " | ".join(r.replace("_", " ") for r in regions)
            + " |",
            "|---|---|---|---|" + "---|" * len(regions),
        ]
        for detector in detectors:
            for item in entry[detector]["by_crop"]:
                share = item.get("saliency_share")
                cells = [_fmt(share[r]) if share else "" for r in regions]
                lines.append(
                    f"| {detector} | {item['crop_fraction']:g} | {_fmt(item['auroc'])} | {_ci(item['auroc_ci'], 3)} | "
                    + " | ".join(cells)
                    + " |"
                )
        if "cnn" in entry and entry["cnn"]["by_crop"][0].get("saliency_share"):
            area = entry["cnn"]["by_crop"][0]["saliency_share"]["area"]
            lines += [
                "",
                "Region columns: each region's share of the drop in the CNN's score when the region is replaced "
                "by the mean real film (audited images, source frame); shares of the input: "
                + ", ".join(f"{r.replace('_', ' ')} {_fmt(area[r])}" for r in regions)
                + ".",
            ]
        if "statistics" in entry:
            groups = entry["statistics"]["by_crop"][0]["by_feature_group"]
            lines.append(
                "Statistics detector, each feature family alone (first crop): "
                + ", ".join(
                    f"{g.replace('_', ' ')} {_fmt(v['auroc'])} ({_ci(v['auroc_ci'], 3)})"
                    for g, v in groups.items()
                )
                + "."
            )
        lines += ["", f"Method: {entry[detectors[0]]['method']}.", ""]
        for detector in detectors:
            lines.append(f"- {detector}: {entry[detector]['detector']}")
        lines.append("")
    return lines


def _label_yardstick(la: dict[str, Any]) -> list[str]:
    """The auditor on the audited set beside the same auditor on each real reference set (its own labels)."""
    score_class = la["score_class"]
    rows = []
    for name, ref in {"audited (prompt labels)": None, **la.get("on_references", {})}.items():
        item = (
            la["auroc_vs_prompt_labels"][score_class] if ref is None else ref["auroc_vs_labels"][score_class]
        )
        ci = item.get("auroc_ci")
        n = (
            sum(la["scores_by_prompt_class"][c]["n"] for c in ("pneumonia", "normal"))
            if ref is None
            else ref["n"]
        )
        rate = la.get("contradiction_rate") if ref is None else ref["contradiction_rate"]
        rows.append(
            f"| {name} | {n} | {_fmt(item['auroc'])} | {'n/a' if not ci else f'{ci[0]:.3f}-{ci[1]:.3f}'} | "
            f"{_fmt(rate)} |"
        )
    if len(rows) == 1:
        return []
    return [
        "",
        f"The same auditor on the real reference sets, against their own labels: the audited set's {score_class} "
        "AUROC and contradiction rate read against these (a sample of each reference set, `label_audit.reference_n`).",
        "",
        f"| set | n | {score_class} AUROC | 95% CI | contradiction rate |",
        "|---|---|---|---|---|",
        *rows,
    ]


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
                    f"  {name} {method}: threshold {_fmt(m['threshold'], 4)}, audited max {_fmt(m['audited'].get('max'), 4)}, "
                    f"flagged {m['n_flagged']} (expected false flags {m['expected_false_flags']:.2f})"
                )
    if "label_audit" in results:
        la = results["label_audit"]
        aurocs = ", ".join(f"{k} {_fmt(v['auroc'])}" for k, v in la["auroc_vs_prompt_labels"].items())
        print(
            f"label fidelity: auditor AUROC vs prompt labels: {aurocs}; {la['n_contradicting']} image(s) contradict their label"
        )
        for name, ref in la.get("on_references", {}).items():
            item = ref["auroc_vs_labels"][la["score_class"]]
            print(
                f"  the same auditor on {name} ({ref['n']} images, real labels): {la['score_class']} AUROC "
                f"{_fmt(item['auroc'])}, contradiction rate {_fmt(ref['contradiction_rate'])}"
            )
    if "attributes" in results:
        print_attributes(results["attributes"])
    if "distance" in results:
        print_spaces(results["distance"].get("spaces") or {})
        for name, entry in results["distance"]["by_reference"].items():
            item = entry["all"]
            ci = item.get("kid_ci")
            print(
                f"distance to {name}: KID {_fmt(item['kid'], 4)}"
                + (f" ({ci[0]:.4g} to {ci[1]:.4g})" if ci else "")
                + f", FID (biased) {_fmt(item['fid'], 4)}"
            )
    for name, entry in (results.get("realism") or {}).items():
        for detector in ("cnn", "statistics"):
            if detector not in entry:
                continue
            crops = entry[detector]["by_crop"]
            first, last = crops[0], crops[-1]
            where = ""
            if first.get("saliency_share"):
                where = f", bottom-band saliency {_fmt(first['saliency_share']['bottom_band'])}"
            after = (
                f" -> {_fmt(last['auroc'])} ({_ci(last['auroc_ci'], 3)}) after cropping {last['crop_fraction']:g}"
                if len(crops) > 1
                else ""
            )
            print(
                f"realism vs {name} ({detector}): AUROC {_fmt(first['auroc'])} ({_ci(first['auroc_ci'], 3)}) at crop "
                f"{first['crop_fraction']:g}{where}{after}"
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


def attributes_markdown(result: dict[str, Any]) -> list[str]:
    """Attribute fidelity: agreement and kappa per attribute, every prompt cell, each confusion table."""
    lines = ["## Attribute fidelity", "", result["rule"] + ".", ""]
    lines += [
        "| attribute | reader | n | agreement | 95% CI | kappa | 95% CI | reader check on references |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["by_attribute"].items():
        check = entry["validation"]
        recall = check.get("recall_by_class")
        checked = (
            ", ".join(f"{cls} {value:.2f}" for cls, value in recall.items()) + f" (recall, n {check['n']})"
            if recall
            else check.get("note", "")
        )
        lines.append(
            f"| {name} | `{entry['reader']}` | {entry['n']} | {_fmt(entry['agreement'])} | {_ci(entry['agreement_ci'])} | "
            f"{_fmt(entry['kappa'])} | {_ci(entry['kappa_ci'])} | {checked} |"
        )
    for name, reason in result["skipped"].items():
        lines.append(f"| {name} | skipped: {reason} | | | | | | |")
    lines += [
        "",
        "| attribute | prompted | n | read as asked | exact 95% CI | read as | Holm p | flagged |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in result["by_attribute"].items():
        for cell in entry["cells"]:
            read_as = ", ".join(f"{value} {count}" for value, count in cell["read_as"].items())
            p = _fmt(cell["p_adjusted"]) if cell["tested"] else f"not tested: {cell['why_not_tested']}"
            lines.append(
                f"| {name} | {cell['value']} | {cell['n']} | {cell['agreement']:.2f} | "
                f"{_ci(cell['agreement_ci'])} | {read_as} | {p} | {'**yes**' if cell['flagged'] else 'no'} |"
            )
    for name, entry in result["by_attribute"].items():
        confusion = entry["confusion"]
        categories = confusion["categories"]
        lines += ["", f"Confusion of {name} (rows asked, columns read):", ""]
        lines += ["| asked \\ read | " + " | ".join(categories) + " |", "|---" * (len(categories) + 1) + "|"]
        lines += [
            f"| {cls} | " + " | ".join(str(v) for v in row) + " |"
            for cls, row in zip(categories, confusion["rows_asked_columns_read"], strict=True)
            if sum(row)
        ]
    lines.append("")
    return lines


def spaces_markdown(spaces: dict[str, Any]) -> list[str]:
    """Distances and PRDC in every feature space, with the spaces that were skipped and why."""
    if not spaces:
        return []
    lines = [
        "### In every feature space",
        "",
        "| space | reference | KID | KID 95% CI | FID (biased) | precision | recall | density | coverage |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, space in spaces.items():
        if not space["available"]:
            continue
        for reference, item in space["by_reference"].items():
            ci = item.get("kid_ci")
            lines.append(
                f"| {name} | {reference} | {_fmt(item['kid'], 4)} | {'n/a' if not ci else f'{ci[0]:.4g} to {ci[1]:.4g}'} | "
                f"{_fmt(item['fid'], 4)} | "
                + " | ".join(_fmt(item.get(key)) for key in ("precision", "recall", "density", "coverage"))
                + " |"
            )
    lines += ["", "| space | model | available |", "|---|---|---|"]
    for name, space in spaces.items():
        status = "yes" if space["available"] else f"skipped: {space['skipped']}"
        lines.append(f"| {name} | `{space.get('model') or '-'}` | {status} |")
    lines += ["", "Compare distances within a space, never across spaces: their scales differ.", ""]
    return lines


def print_attributes(result: dict[str, Any]) -> None:
    for name, entry in result["by_attribute"].items():
        print(
            f"attribute fidelity: {name}: agreement {_fmt(entry['agreement'])} ({_ci(entry['agreement_ci'])}), "
            f"kappa {_fmt(entry['kappa'])} ({_ci(entry['kappa_ci'])}), reader {entry['reader']}"
        )
        categories = entry["confusion"]["categories"]
        print("  asked \\ read: " + " | ".join(categories))
        for cls, row in zip(categories, entry["confusion"]["rows_asked_columns_read"], strict=True):
            if sum(row):
                print(f"  {cls}: " + " | ".join(str(v) for v in row))
    for name, reason in result["skipped"].items():
        print(f"attribute fidelity: {name} skipped: {reason}")
    flagged = result["flagged"]
    print(
        f"attribute fidelity: {len(flagged)} prompt cell(s) of {result['n_cells_tested']} tested flagged as ignored"
        + "".join(
            f"; {item['attribute']}={item['value']!r} read as asked in {item['agreement']:.0%} "
            f"(read as {item['read_as']}, Holm p {item['p_adjusted']:.2g})"
            for item in flagged
        )
    )


def print_spaces(spaces: dict[str, Any]) -> None:
    for name, space in spaces.items():
        if not space["available"]:
            print(f"distance in {name}: skipped ({space['skipped']})")
            continue
        for reference, item in space["by_reference"].items():
            ci = item.get("kid_ci")
            print(
                f"distance in {name} to {reference}: KID {_fmt(item['kid'], 4)}"
                + (f" ({ci[0]:.4g} to {ci[1]:.4g})" if ci else "")
                + f", FID {_fmt(item['fid'], 4)}, precision {_fmt(item.get('precision'))}, recall "
                f"{_fmt(item.get('recall'))}, density {_fmt(item.get('density'))}, coverage {_fmt(item.get('coverage'))}"
            )
