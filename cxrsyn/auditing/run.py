"""One audit from a composed config (``conf/audit.yaml``): read the sets, run the enabled parts, write
``audit.json`` with ``label_audit.csv``, ``exclude.txt`` and the figures; ``render`` turns the results into
``audit.md``, the printed summary and the W&B log.

The outputs are published together (``cxrsyn.core.fileio.publishing``: a staging folder, ``audit.json``
last) while the folder is locked (``cxrsyn.core.runfolder``): a kill or a full disk leaves the previous audit
as it was. ``label_audit.csv`` is spreadsheet-safe."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from cxrsyn.auditing.artifacts import ArtifactsSettings, artifacts_figure, class_artifacts
from cxrsyn.auditing.attributes import AttributeSettings, attribute_fidelity
from cxrsyn.auditing.contamination import (
    ContaminationSettings,
    audit_reference,
    calibration_values,
    embedding_matches,
    pairs_figure,
    pixel_matches,
    pixel_matches_many,
)
from cxrsyn.auditing.distance import DistanceSettings, distances, mean_pairwise_cosine
from cxrsyn.auditing.labels import (
    LabelAuditSettings,
    auditor_scores,
    grid_figure,
    label_audit,
    reference_label_audit,
    reference_sample,
)
from cxrsyn.auditing.realism import RealismSettings, realism_part
from cxrsyn.auditing.render import log_to_wandb, markdown, print_sets, print_summary
from cxrsyn.auditing.sets import (
    Features,
    ImageSet,
    compute_features,
    decode_rows,
    load_images,
    read_set,
    reference_features,
)
from cxrsyn.auditing.spaces import SpaceSettings, feature_spaces
from cxrsyn.core.compose import instantiate_node, resolved_config, settings_as, settings_at
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import publishing, save_figure, write_csv, write_npz, write_text
from cxrsyn.core.parallel import usable_cores
from cxrsyn.core.paths import inside
from cxrsyn.core.runfolder import exclusive
from cxrsyn.data.sources import DatasetFolder

AUDIT_JSON, AUDIT_MD, EXCLUDE_NAME = "audit.json", "audit.md", "exclude.txt"
FIGURES = "figures"


@dataclass(frozen=True)
class AuditSettings:
    """The parts' settings, built once from the config."""

    contamination: ContaminationSettings
    label_audit: LabelAuditSettings
    distance: DistanceSettings
    artifacts: ArtifactsSettings
    attributes: AttributeSettings
    spaces: SpaceSettings  # the feature-space entries of the distance block
    realism: RealismSettings

    @classmethod
    def from_config(cls, cfg: DictConfig) -> AuditSettings:
        return cls(
            ContaminationSettings.from_section(settings_at(cfg, "contamination")),
            settings_as(LabelAuditSettings, settings_at(cfg, "label_audit"), "label_audit"),
            settings_as(DistanceSettings, settings_at(cfg, "distance"), "distance"),
            settings_as(ArtifactsSettings, settings_at(cfg, "artifacts"), "artifacts"),
            settings_as(AttributeSettings, settings_at(cfg, "attributes"), "attributes"),
            settings_as(SpaceSettings, settings_at(cfg, "distance"), "distance"),
            RealismSettings.from_section(settings_at(cfg, "realism")),
        )


@dataclass(frozen=True)
class AuditData:
    """What the parts read: the audited set, its decoded images and features, the reference sets and theirs."""

    audited: ImageSet
    images: torch.Tensor
    features: Features | None  # None when no part needs a model
    references: list[ImageSet]
    reference_features: dict[str, Features]  # by reference name; empty unless contamination or distance runs
    seed: int
    workers: Any
    reference_keys: dict[str, str] = field(default_factory=dict)  # the cache key of each reference's features


def audit(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(cfg.out_dir)
    with exclusive(out_dir, "cxrsyn.audit"), publishing(out_dir, AUDIT_JSON) as publication:
        results, figures = _audit(cfg, publication.staging)
        results = publication.write_manifest(results)
    figures = {name: out_dir / path.relative_to(publication.staging) for name, path in figures.items()}
    print_summary(results)
    print(
        f"audit: {out_dir / AUDIT_JSON}, {out_dir / AUDIT_MD}, figures in {out_dir / FIGURES} ({results['seconds']} s)"
    )
    log_to_wandb(cfg, results, figures)
    return results


def _audit(cfg: DictConfig, out_dir: Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """Every output but audit.json into ``out_dir`` (a staging folder); the results and the figures' paths."""
    started = time.time()
    timings: dict[str, float] = {}

    def lap(step: str) -> None:
        timings[step] = time.time() - started - sum(timings.values())

    torch.set_num_threads(max(1, int(cfg.get("num_threads") or usable_cores())))
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(resolved_config(cfg)), out_dir / "config.yaml")
    settings = AuditSettings.from_config(cfg)
    workers = cfg.get("workers")

    audited, references = _read_sets(cfg, settings.contamination)
    print_sets(audited, references)
    images = load_images(audited, workers)
    lap("read")

    needs_model = settings.contamination.enabled or settings.distance.enabled or settings.label_audit.enabled
    auditor = instantiate_node(cfg, "auditor") if needs_model else None
    extractor = instantiate_node(cfg, "extractor") if cfg.get("extractor") else auditor
    results: dict[str, Any] = {
        "audited": {"name": audited.name, **audited.summary},
        "references": {ref.name: ref.summary for ref in references},
        "image_size": int(cfg.image_size),
        "embedding_model": getattr(extractor, "identity", None),
        "auditor": getattr(auditor, "identity", None),
    }
    figures: dict[str, Path] = {}
    lap("models")

    coarse, fine = settings.contamination.coarse, settings.contamination.fine
    audited_features = compute_features(images, coarse, fine, extractor) if extractor is not None else None
    reference_data: dict[str, Features] = {}
    reference_keys: dict[str, str] = {}
    if settings.contamination.enabled or settings.distance.enabled:
        for ref in references:
            features, cache = reference_features(
                ref, coarse, fine, extractor, settings.contamination.cache_dir, workers
            )
            reference_data[ref.name] = features
            reference_keys[ref.name] = cache.pop("key")
            results["references"][ref.name]["features_cache"] = cache
    data = AuditData(
        audited, images, audited_features, references, reference_data, int(cfg.seed), workers, reference_keys
    )
    lap("features")

    if settings.contamination.enabled:
        results["contamination"], drawn = _contamination(data, settings.contamination, out_dir)
        figures.update(_save(drawn, out_dir))
        lap("contamination")
    label_scores = None
    if settings.label_audit.enabled:
        results["label_audit"], drawn, label_scores = _labels(data, auditor, settings.label_audit, out_dir)
        figures.update(_save(drawn, out_dir))
        lap("label_audit")
    if settings.attributes.enabled:
        readers, skipped = _instantiate_each(cfg, "attribute_readers")
        results["attributes"] = attribute_fidelity(
            audited,
            images,
            readers,
            skipped,
            references,
            settings.attributes,
            data.seed,
            label_scores,
            workers,
        )
        lap("attributes")
    if settings.distance.enabled:
        thresholds = _thresholds(results.get("contamination"))
        results["distance"] = _distance(data, settings.distance, settings.contamination, thresholds)
        models, skipped = _instantiate_each(cfg, "distance.spaces")
        computed = {name: entry["all"] for name, entry in results["distance"]["by_reference"].items()}
        results["distance"]["spaces"] = feature_spaces(
            audited,
            images,
            (results["embedding_model"], data.features.embeddings, _embeddings(reference_data), computed),
            models,
            skipped,
            references,
            settings.distance,
            settings.spaces,
            data.seed,
            settings.contamination.cache_dir,
            workers,
        )
        lap("distance")
    if settings.artifacts.enabled:
        result, maps = class_artifacts(images, audited.labels, asdict(settings.artifacts), data.seed)
        results["artifacts"] = result
        if maps:
            figure = artifacts_figure(maps, result, f"{audited.name}: class means and their difference")
            figures.update(_save({"artifacts": figure}, out_dir))
        lap("artifacts")
    if settings.realism.enabled:
        results["realism"], drawn, tables = realism_part(
            audited, images, references, settings.realism, data.seed, workers
        )
        figures.update(_save(drawn, out_dir))
        for name, table in tables.items():
            write_csv(out_dir / f"{name}.csv", table)
        lap("realism")
    results["seconds_by_step"] = {name: round(value, 1) for name, value in timings.items()}
    results["figures"] = {name: str(path.relative_to(out_dir)) for name, path in figures.items()}
    results["seconds"] = round(time.time() - started, 1)
    write_text(out_dir / AUDIT_MD, markdown(results))
    return results, figures


def _instantiate_each(cfg: DictConfig, key: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Every entry of the config mapping at ``key`` instantiated (for ``source``), and the entries that could
    not be (weights not on this machine, a package missing) with their one-line reason, printed."""
    made: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name, node in (OmegaConf.select(cfg, key) or {}).items():
        if node is None:
            continue
        try:
            made[str(name)] = instantiate_node(cfg, f"{key}.{name}")
        except CxrsynError as error:
            skipped[str(name)] = str(error)
            print(f"audit: {key}.{name} skipped: {error}")
    return made, skipped


def _embeddings(reference_data: dict[str, Features]) -> dict[str, np.ndarray]:
    return {name: features.embeddings for name, features in reference_data.items()}


def _read_sets(cfg: DictConfig, contamination: ContaminationSettings) -> tuple[ImageSet, list[ImageSet]]:
    """The audited set (``data``) and the reference sets (``test_sets``, then the extra reference folders)."""
    size = int(cfg.image_size)
    audited = read_set(
        str(cfg.get("name") or _data_name(cfg)), instantiate_node(cfg, "data", _convert_="object"), size
    )
    references = [
        read_set(str(name), instantiate_node(cfg, f"test_sets.{name}", _convert_="object"), size)
        for name in (cfg.get("test_sets") or {})
    ]
    for name, root in (contamination.extra_references or {}).items():
        references.append(read_set(str(name), DatasetFolder(root=str(root)), size))
    return audited, references


def _data_name(cfg: DictConfig) -> str:
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices.get("data") or "audited")
    return "audited"


def _save(figures: dict[str, Figure], out_dir: Path) -> dict[str, Path]:
    """Each figure as ``figures/<name>.png``; returns the paths by name."""
    paths = {}
    for name, figure in figures.items():
        paths[name] = save_figure(figure, inside(out_dir, Path(FIGURES) / f"{name}.png"), dpi=100)
    return paths


def _calibration(
    data: AuditData, ref: ImageSet, settings: ContaminationSettings
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The clean calibration values of each method against ``ref`` (``calibration_values``): read from
    ``cache_dir`` when an earlier audit computed them for the same reference set, descriptors, model, seed,
    sample size and candidates, else computed (the costliest step: ``calibration_n`` searches) and cached."""
    n_cal = min(int(settings.calibration_n), len(ref.table))
    rows = np.sort(np.random.default_rng(data.seed).choice(len(ref.table), n_cal, replace=False))
    digest = hashlib.sha256(
        json.dumps([data.reference_keys.get(ref.name), data.seed, n_cal, int(settings.candidates)]).encode()
    ).hexdigest()[:16]
    file = (
        Path(settings.cache_dir) / f"audit-{ref.name}-calibration-{digest}.npz"
        if settings.cache_dir and ref.name in data.reference_keys
        else None
    )
    values: dict[str, np.ndarray] = {}
    if file is not None and file.is_file():
        with np.load(file) as saved:
            values = {method: saved[method] for method in settings.methods if method in saved}
    if set(values) == set(settings.methods):
        return values, {"file": str(file), "built": False}
    calibration = torch.cat(
        [pixels for _, pixels in decode_rows(ref, rows, data.workers, f"{ref.name}: calibration sample")]
    )
    values = calibration_values(ref, data.reference_features[ref.name], calibration, rows, settings)
    if file is not None:
        write_npz(file, **values)
    return values, {"file": str(file) if file else None, "built": True}


def _contamination(
    data: AuditData, settings: ContaminationSettings, out_dir: Path
) -> tuple[dict[str, Any], dict[str, Figure]]:
    """Part 1 against every reference set; writes ``exclude.txt`` (unless ``write_exclude_file`` is false)."""
    unknown = set(settings.methods) - {"pixels", "embedding"}
    if unknown:
        raise CxrsynError(f"contamination.methods has unknown {sorted(unknown)}; use pixels and/or embedding")
    result: dict[str, Any] = {
        "search": "exact: chunked matrix products (torch), no approximate index",
        "by_reference": {},
    }
    flagged: list[dict[str, Any]] = []
    figures: dict[str, Figure] = {}
    references = data.references
    audited_pixels = pixel_matches_many(
        data.images,
        [data.reference_features[ref.name] for ref in references],
        settings.coarse,
        settings.fine,
        int(settings.candidates),
        [ref.patients for ref in references],
        [None] * len(references),
        desc="pixel search",
    )
    for ref, pixels in zip(references, audited_pixels, strict=True):
        calibration, cache = _calibration(data, ref, settings)
        outcome = audit_reference(
            data.audited, pixels, data.features, ref, data.reference_features[ref.name], calibration, settings
        )
        for method in outcome["methods"].values():
            method["calibration"]["cache"] = cache
        result["by_reference"][ref.name] = outcome["methods"]
        flagged.extend(outcome["flagged"])
        pairs = []
        for item in sorted(outcome["flagged"], key=lambda f: -f["similarity"])[: int(settings.n_show)]:
            [reference_image] = [p for _, p in decode_rows(ref, np.array([item["_match_row"]]), 0, "")]
            caption = f"{item['path']} ~ {item['match_path']}\n{item['method']} {item['similarity']:.3f}"
            pairs.append((data.images[item["_row"], 0].numpy(), reference_image[0, 0].numpy(), caption))
        figures[f"contamination_{ref.name}"] = pairs_figure(
            pairs, f"contamination: flagged audited images (left) and their {ref.name} matches"
        )
    for item in flagged:
        item.pop("_row")
        item.pop("_match_row")
    result["flagged"] = sorted(flagged, key=lambda f: (-f["similarity"], f["path"]))
    paths = sorted({item["path"] for item in flagged})
    result["n_flagged_images"] = len(paths)
    methods = [m for by_method in result["by_reference"].values() for m in by_method.values()]
    # a clean audited image is flagged by each reference x method with probability <= its rate
    result["false_positive_rate"] = float(settings.false_positive_rate)
    result["expected_false_flags"] = float(sum(m["expected_false_flags"] for m in methods))
    result["notes"] = [m["calibration"]["note"] for m in methods if m["calibration"]["note"]]
    for note in result["notes"]:
        print(f"audit: {note}")
    if settings.write_exclude_file:
        lines = [
            "# images python -m cxrsyn.audit flagged as near-copies of reference images;",
            "# leave them out of training with data.exclude_file=<this file>",
            *paths,
        ]
        write_text(out_dir / EXCLUDE_NAME, "\n".join(lines) + "\n")
        result["exclude_file"] = EXCLUDE_NAME
    return result, figures


def _thresholds(contamination: dict[str, Any] | None) -> dict[str, dict[str, float]]:
    """The calibrated contamination threshold per reference set and method ({} without part 1)."""
    if not contamination:
        return {}
    return {
        name: {method: item["threshold"] for method, item in methods.items() if item["threshold"] is not None}
        for name, methods in contamination["by_reference"].items()
    }


def _labels(
    data: AuditData, auditor: Any, settings: LabelAuditSettings, out_dir: Path
) -> tuple[dict[str, Any], dict[str, Figure], np.ndarray]:
    """Part 2; writes ``label_audit.csv``; returns the results, the figure and the score_class scores."""
    scores = auditor_scores(auditor, data.images, list(settings.classes))
    result, per_image = label_audit(data.audited.table, scores, settings, data.seed)
    write_csv(out_dir / "label_audit.csv", per_image)
    result["per_image"] = "label_audit.csv"
    result["on_references"] = {}
    for ref in data.references:  # the yardstick: the same auditor against real labels
        rows = reference_sample(len(ref.table), settings.reference_n, data.seed)
        images = torch.cat([p for _, p in decode_rows(ref, rows, data.workers, f"{ref.name}: label audit")])
        result["on_references"][ref.name] = reference_label_audit(
            ref.labels[rows],
            auditor_scores(auditor, images, list(settings.classes)),
            settings,
            data.seed,
            patients=ref.patients[rows],
        )
    rows = {path: i for i, path in enumerate(data.audited.table["path"].astype(str))}
    shown = result["contradicting"][: int(settings.n_show)]
    figure = grid_figure(
        [data.images[rows[item["path"]], 0].numpy() for item in shown],
        [f"label {item['label']}, {result['score_class']} {item['score']:.2f}" for item in shown],
        f"label audit: images whose auditor score contradicts their label, most first ({len(shown)} shown)",
    )
    return result, {"label_audit": figure}, scores[settings.score_class].to_numpy()


def _distance(
    data: AuditData,
    settings: DistanceSettings,
    contamination: ContaminationSettings,
    thresholds: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """Part 3: KID and FID to each reference set (overall and per class) and the audited set's diversity;
    near-duplicate pairs inside it use the first reference set's contamination ``thresholds``."""
    a = data.features.embeddings
    audited, references, reference_data, seed = (
        data.audited,
        data.references,
        data.reference_features,
        data.seed,
    )
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
                bool(settings.fid_per_class),
            )
        result["by_reference"][ref.name] = entry
    diversity: dict[str, Any] = {
        "mean_pairwise_cosine": mean_pairwise_cosine(a, seed=seed),
        "reference_mean_pairwise_cosine": {
            ref.name: mean_pairwise_cosine(reference_data[ref.name].embeddings, seed=seed)
            for ref in references
        },
    }
    images = data.images
    n = len(images)
    if thresholds and n >= 2:
        ref = references[0]
        self_rows = np.eye(n, dtype=bool)
        coarse, fine = contamination.coarse, contamination.fine
        audited_refs = type(reference_data[ref.name])(
            coarse.canonical(images).numpy(), data.features.fine, data.features.embeddings
        )
        near: dict[str, Any] = {}
        methods = ["embedding", *(["pixels"] if settings.pixel_near_duplicates else [])]
        for method, threshold in thresholds[ref.name].items():
            if method not in methods:
                continue
            if method == "pixels":
                match = pixel_matches(
                    images,
                    audited_refs,
                    coarse,
                    fine,
                    int(contamination.candidates),
                    audited.patients,
                    self_rows,
                )
                values = match.distinctiveness
            else:
                centre = reference_data[ref.name].embeddings.mean(axis=0)
                match = embedding_matches(
                    data.features.embeddings, data.features.embeddings, centre, self_rows
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
