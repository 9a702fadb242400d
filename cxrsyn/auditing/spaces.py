"""Distances in more than one feature space.

Frechet distances disagree across feature extractors (Woodland et al., MICCAI 2024), and CheXGenBench
reports Inception and RadDINO features, so the distance part is repeated in every feature space the user has
weights for (``distance.spaces``), beside the embedding model's (space ``auditor``, always present):

- ``xrv_densenet``: a torchxrayvision DenseNet-121's penultimate layer (``TorchXRayVisionAuditor``, local
  weights only);
- ``inception``: Inception-v3 pool features (2048) as torch-fidelity computes them for FID/KID (the extractor
  torchmetrics' FID uses), weights from a local file;
- ``raddino``: a RadDINO-style ViT (``microsoft/rad-dino``, transformers' Dinov2) from a local folder, its CLS
  embedding; or any timm model through ``TimmExtractor`` with ``weights_path``;
- ``random_resnet``: a randomly initialised, seeded ResNet-18 at low resolution (Naeem et al. 2020 argue for
  random embeddings as a check that needs no training data): always available.

In each space: KID with its bootstrap CI and FID (``cxrsyn.auditing.distance.distances``: the same code as
the ``auditor`` space), and precision, recall, density and coverage (Naeem et al., ICML 2020) by their
authors' ``prdc`` package, with k = ``prdc_nearest_k`` nearest neighbours, on the audited set against a
seeded sample of ``prdc_reference_n`` reference images (null: as many as the audited set, as the method
assumes sets of equal size). A space whose weights or package are missing is skipped with the one-line
reason, and the table says so. Reference embeddings are computed in one decoding pass for every space and
cached like the auditor's (``audit-space-<set>-<key>.npz``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from cxrsyn.auditing.distance import DistanceSettings, distances
from cxrsyn.auditing.models import TimmExtractor, file_digest, resize_images
from cxrsyn.auditing.sets import ImageSet, decode_rows
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_npz
from cxrsyn.data.cache import cache_key

AUDITOR_SPACE = "auditor"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth"
RADDINO = "microsoft/rad-dino"


@dataclass(frozen=True)
class SpaceSettings:
    """The feature-space entries of the ``distance`` block of ``conf/audit.yaml``."""

    prdc: bool = True
    prdc_nearest_k: int = 5
    prdc_reference_n: int | None = None


class RandomInitExtractor(TimmExtractor):
    """A timm model with random, seeded weights (no download, no training): low-level image statistics."""

    def __init__(
        self,
        name: str = "resnet18",
        seed: int = 0,
        input_size: int = 64,
        batch_size: int = 64,
        device: str = "cpu",
    ):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            super().__init__(name, False, None, input_size, batch_size, device)
        self.identity = f"timm-random:{name}:seed{seed}:{input_size}"


class InceptionExtractor:
    """Inception-v3 pool features as torch-fidelity computes them (uint8 RGB resized to 299 the way
    TensorFlow 1 did), from a local weights file (``weights_path``, never downloaded here)."""

    def __init__(self, weights_path: str | None = None, batch_size: int = 32, device: str = "cpu"):
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise CxrsynError(
                "distance.spaces.inception needs torch-fidelity: pip install torch-fidelity (or the audit extra)"
            ) from None
        default = Path("~/.cache/torch/hub/checkpoints").expanduser() / os.path.basename(INCEPTION_URL)
        path = Path(weights_path).expanduser() if weights_path else default
        if not path.is_file():
            raise CxrsynError(
                f"distance.spaces.inception: the Inception weights are not on this machine ({path}); download "
                f"{INCEPTION_URL} to {default} or set distance.spaces.inception.weights_path=FILE"
            )
        try:  # a plain state dict (checked without unpickling code), which torch-fidelity then loads
            torch.load(path, map_location="cpu", weights_only=True)
            with contextlib.redirect_stdout(io.StringIO()):
                net = FeatureExtractorInceptionV3(
                    "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path)
                )
        except Exception as error:  # noqa: BLE001 - a truncated or foreign file
            raise CxrsynError(
                f"distance.spaces.inception.weights_path={path} is not torch-fidelity's Inception-v3 weights "
                f"({type(error).__name__}); download {INCEPTION_URL} again"
            ) from None
        self.net = net.to(device)
        self.batch_size = batch_size
        self.device = device
        self.identity = f"torch-fidelity:inception-v3-compat:2048:{file_digest(path)}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        pixels = (images.float().clamp(0, 1) * 255.0).round().to(torch.uint8).repeat(1, 3, 1, 1)
        (features,) = self.net(pixels.to(self.device))
        return features.float().cpu()


class HuggingFaceExtractor:
    """A transformers vision model from a local folder (e.g. RadDINO, ``microsoft/rad-dino``): its pooled CLS
    embedding (``pooler_output``, else the first token), inputs resized and normalised as the folder's
    ``preprocessor_config.json`` says (its crop size, mean and std)."""

    def __init__(self, model_dir: str | None = None, batch_size: int = 16, device: str = "cpu"):
        fix = (
            f"download {RADDINO} (https://huggingface.co/{RADDINO}; huggingface-cli download {RADDINO} "
            "--local-dir DIR) and set distance.spaces.raddino.model_dir=DIR"
        )
        if not model_dir:
            raise CxrsynError(f"distance.spaces.raddino.model_dir is not set: {fix}")
        folder = Path(model_dir).expanduser()
        if not (folder / "config.json").is_file():
            raise CxrsynError(
                f"distance.spaces.raddino.model_dir={folder} holds no model (config.json): {fix}"
            )
        try:
            from transformers import AutoModel
        except ImportError:
            raise CxrsynError(
                "distance.spaces.raddino needs transformers: pip install transformers"
            ) from None
        self.net = AutoModel.from_pretrained(str(folder), local_files_only=True).eval().to(device)
        processor = folder / "preprocessor_config.json"
        config = json.loads(processor.read_text()) if processor.is_file() else {}
        crop = config.get("crop_size") or config.get("size") or {}
        size = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else crop
        self.input_size = int(size or getattr(self.net.config, "image_size", 224))
        self.mean = torch.tensor(config.get("image_mean", [0.485, 0.456, 0.406]), dtype=torch.float32)
        self.std = torch.tensor(config.get("image_std", [0.229, 0.224, 0.225]), dtype=torch.float32)
        self.batch_size = batch_size
        self.device = device
        digest = hashlib.sha256()
        for file in sorted(folder.glob("*")):
            if file.is_file():
                digest.update(f"{file.name}\0{file_digest(file)}".encode())
        self.identity = f"transformers:{folder.name}:{digest.hexdigest()[:16]}:{self.input_size}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = resize_images(images.float(), self.input_size).repeat(1, 3, 1, 1)
        x = (x - self.mean.view(1, 3, 1, 1)) / self.std.view(1, 3, 1, 1)
        out = self.net(pixel_values=x.to(self.device))
        pooled = getattr(out, "pooler_output", None)
        return (pooled if pooled is not None else out.last_hidden_state[:, 0]).float().cpu()


def prdc(reference: np.ndarray, audited: np.ndarray, nearest_k: int) -> dict[str, float] | None:
    """Precision, recall, density and coverage of the audited features (fake) against the reference (real),
    by the ``prdc`` package (its stdout line silenced); None when a set has no k + 1 points."""
    if min(len(reference), len(audited)) <= nearest_k + 1:
        return None
    from prdc import compute_prdc

    with contextlib.redirect_stdout(io.StringIO()):
        values = compute_prdc(
            real_features=reference.astype(np.float32),
            fake_features=audited.astype(np.float32),
            nearest_k=nearest_k,
        )
    return {name: float(value) for name, value in values.items()}


def space_entry(
    audited: np.ndarray,
    reference: np.ndarray,
    distance: DistanceSettings,
    settings: SpaceSettings,
    seed: int,
    kid_and_fid: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """KID (with CI) and FID (reused from ``kid_and_fid`` when given) and PRDC of one space and reference."""
    entry = dict(kid_and_fid) if kid_and_fid is not None else distances(audited, reference, distance, seed)
    if settings.prdc:
        n = min(len(reference), int(settings.prdc_reference_n or len(audited)))
        rows = np.sort(np.random.default_rng(seed).choice(len(reference), n, replace=False))
        values = prdc(reference[rows], audited, int(settings.prdc_nearest_k))
        entry.update(values or dict.fromkeys(("precision", "recall", "density", "coverage")))
        entry["prdc_n_reference"], entry["prdc_nearest_k"] = n, int(settings.prdc_nearest_k)
        entry["prdc_method"] = (
            f"prdc package (Naeem et al. 2020), k = {settings.prdc_nearest_k}, Euclidean, against {n} reference "
            f"images sampled with seed {seed}"
        )
    return entry


def reference_embeddings(
    image_set: ImageSet, models: dict[str, Any], cache_dir: str | os.PathLike | None, workers: Any = None
) -> dict[str, np.ndarray]:
    """Every model's embeddings of every reference image: from the cache where present, the rest in one
    decoding pass (with a progress bar), then cached."""
    files: dict[str, Path | None] = {}
    found: dict[str, np.ndarray] = {}
    base = cache_key(image_set.table, image_set.prep)
    for name, model in models.items():
        key = hashlib.sha256(f"{base}\0{model.identity}".encode()).hexdigest()[:16]
        files[name] = Path(cache_dir) / f"audit-space-{image_set.name}-{key}.npz" if cache_dir else None
        if files[name] is not None and files[name].is_file():
            with np.load(files[name]) as saved:
                found[name] = saved["embeddings"]
    missing = [name for name in models if name not in found]
    if missing:
        parts: dict[str, list[np.ndarray]] = {name: [] for name in missing}
        desc = f"{image_set.name}: embeddings in {', '.join(missing)}"
        with tqdm(total=len(image_set.table), desc=desc, unit="img") as bar:
            for _, pixels in decode_rows(image_set, workers=workers, desc=f"{image_set.name}: decode"):
                for name in missing:
                    parts[name].append(embed_all(models[name], pixels))
                bar.update(len(pixels))
        for name in missing:
            found[name] = np.concatenate(parts[name])
            if files[name] is not None:
                write_npz(files[name], embeddings=found[name])
    return found


def embed_all(model: Any, images: torch.Tensor) -> np.ndarray:
    batch = getattr(model, "batch_size", 32)
    parts = [model.embed(images[i : i + batch]) for i in range(0, len(images), batch)]
    return torch.cat(parts).float().numpy()


def feature_spaces(
    audited: ImageSet,
    images: torch.Tensor,
    auditor_space: tuple[str, np.ndarray, dict[str, np.ndarray], dict[str, dict[str, Any]]],
    models: dict[str, Any],
    skipped: dict[str, str],
    references: list[ImageSet],
    distance: DistanceSettings,
    settings: SpaceSettings,
    seed: int,
    cache_dir: str | os.PathLike | None,
    workers: Any = None,
) -> dict[str, Any]:
    """Every space's entry per reference set; ``auditor_space`` is (identity, audited embeddings, reference
    embeddings by set, KID/FID already computed by set) of the embedding model."""
    identity, audited_auditor, reference_auditor, computed = auditor_space
    spaces: dict[str, Any] = {
        AUDITOR_SPACE: {
            "available": True,
            "model": identity,
            "dim": int(audited_auditor.shape[1]),
            "by_reference": {
                ref.name: space_entry(
                    audited_auditor,
                    reference_auditor[ref.name],
                    distance,
                    settings,
                    seed,
                    computed.get(ref.name),
                )
                for ref in references
            },
        }
    }
    audited_embeddings = {name: embed_all(model, images) for name, model in models.items()}
    by_reference = {ref.name: reference_embeddings(ref, models, cache_dir, workers) for ref in references}
    for name, model in models.items():
        spaces[name] = {
            "available": True,
            "model": model.identity,
            "dim": int(audited_embeddings[name].shape[1]),
            "by_reference": {
                ref.name: space_entry(
                    audited_embeddings[name], by_reference[ref.name][name], distance, settings, seed
                )
                for ref in references
            },
        }
    for name, reason in skipped.items():
        spaces[name] = {"available": False, "skipped": reason}
    return spaces
