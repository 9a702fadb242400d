"""Models the audit scores and embeds images with: a pretrained chest X-ray classifier (the auditor), a timm
feature extractor, and a small pixel model (the phantom stand-in, and the tests' auditor).

Every model takes images as (N, 1, H, W) float tensors in [0, 1], bone bright, and offers

- ``embed(images) -> (N, d)``: features (contamination by embedding, KID/FID, diversity);
- ``identity``: a string naming the model and its weights (part of the embedding cache key);

and an auditor also ``pathologies`` (its output names) and ``scores(images) -> (N, len(pathologies))``,
probabilities in [0, 1] where 0.5 is the model's operating point.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrsyn.core.errors import CxrsynError
from cxrsyn.models.checkpoints import load_checkpoint, load_module_weights

DEFAULT_XRV_WEIGHTS = "densenet121-res224-chex"  # CheXpert only: has seen neither RSNA/NIH nor Kermany


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def file_digest(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class TorchXRayVisionAuditor:
    """A torchxrayvision DenseNet-121 (default ``densenet121-res224-chex``, trained on CheXpert only).

    Weights: ``weights_path`` (a file saved from the model or its state dict, read without running any of its
    code: see ``cxrsyn.models.checkpoints.load_module_weights``) or torchxrayvision's cache
    (``cache_dir``, default ``~/.torchxrayvision/models_data/``), downloaded there on first use unless the
    machine is offline (``HF_HUB_OFFLINE=1``); a missing file then stops with one line saying what to fetch
    and where to put it (``download: false``: never downloaded, e.g. as a feature space of the distance part;
    ``key`` names the config entry in that line). Outputs are torchxrayvision's, rescaled so each class's
    operating point is 0.5.
    """

    def __init__(
        self,
        weights: str = DEFAULT_XRV_WEIGHTS,
        weights_path: str | None = None,
        cache_dir: str | None = None,
        input_size: int = 224,
        batch_size: int = 32,
        device: str = "cpu",
        download: bool = True,
        key: str = "auditor",
    ):
        import torchxrayvision as xrv

        if weights not in xrv.models.model_urls or not weights.startswith("densenet"):
            known = sorted(name for name in xrv.models.model_urls if name.startswith("densenet"))
            raise CxrsynError(f"{key}.weights={weights!r} is unknown; use one of {', '.join(known)}")
        entry = xrv.models.model_urls[weights]
        path = (
            Path(weights_path) if weights_path else self._cached_file(xrv, weights, cache_dir, download, key)
        )
        if not path.is_file():
            raise CxrsynError(f"{key}.weights_path={path} does not exist; give the weights file or null")
        model = xrv.models.DenseNet(weights=None, num_classes=len(entry["labels"]))
        # no code of the file runs: a state dict, or torchxrayvision's whole pickled model read inertly
        state = load_module_weights(path, "auditor.weights_path")
        try:
            model.load_state_dict(state)
        except (RuntimeError, KeyError, ValueError) as error:  # a foreign model
            raise CxrsynError(
                f"{path} is not a torchxrayvision DenseNet-121 weights file for {weights} "
                f"({type(error).__name__}); download it again or fix {key}.weights_path"
            ) from None
        model.pathologies = model.targets = list(entry["labels"])
        model.op_threshs = torch.tensor(entry["op_threshs"], dtype=torch.float32)
        self.model = model.eval().to(device)
        self.pathologies = list(entry["labels"])
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = device
        self.identity = f"torchxrayvision:{weights}:{file_digest(path)}:{input_size}"

    @staticmethod
    def _cached_file(
        xrv: Any, weights: str, cache_dir: str | None, download: bool = True, key: str = "auditor"
    ) -> Path:
        url = xrv.models.model_urls[weights]["weights_url"]
        folder = Path(os.path.expanduser(cache_dir or xrv.utils.get_cache_dir()))
        path = folder / os.path.basename(url)
        if path.is_file():
            return path
        fix = f"download {url} to {path} (or set {key}.weights_path=FILE)"
        if _offline() or not download:
            raise CxrsynError(f"torchxrayvision weights {weights} are not on this machine: {fix}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            xrv.utils.download(url, str(partial))
            os.replace(partial, path)
        except Exception as error:  # noqa: BLE001 - network failures of every kind have the same fix
            raise CxrsynError(
                f"torchxrayvision weights {weights} could not be downloaded ({type(error).__name__}): {fix}"
            ) from None
        return path

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        # torchxrayvision's scale: [0, 1] -> [-1024, 1024]
        return (resize_images(images.float(), self.input_size) * 2048.0 - 1024.0).to(self.device)

    @torch.no_grad()
    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(self._inputs(images)).float().cpu()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features2(self._inputs(images)).float().cpu()


class TimmExtractor:
    """Pooled features of a timm model (``pretrained`` from the hub, or ``weights_path``), one gray channel."""

    def __init__(
        self,
        name: str,
        pretrained: bool = False,
        weights_path: str | None = None,
        input_size: int = 224,
        batch_size: int = 32,
        device: str = "cpu",
    ):
        from cxrsyn.models.backbone import create_backbone, input_normalisation

        self.net = create_backbone(name, pretrained, weights_path).eval().to(device)
        self.mean, self.std = input_normalisation(self.net)
        self.input_size = input_size
        self.batch_size = batch_size
        self.device = device
        weights = file_digest(Path(weights_path)) if weights_path else ("hub" if pretrained else "random")
        self.identity = f"timm:{name}:{weights}:{input_size}"

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        x = (resize_images(images.float(), self.input_size) - self.mean) / self.std
        features = self.net.forward_features(x.to(self.device))
        return self.net.forward_head(features, pre_logits=True).flatten(1).float().cpu()


class PixelAuditor:
    """A small auditor on pixels: images downsampled to ``grid`` x ``grid``, zero-mean and unit-variance
    (the embedding), and one logistic regression per pathology on them.

    Weights come from ``weights_path`` (``save`` writes them) or from ``fit``. It stands in for a pretrained
    classifier where none can be fetched (``source=phantom``: fitted on a phantom set of its own, see
    ``PhantomAuditor``) and in the tests. It says nothing about real radiographs.
    """

    def __init__(
        self,
        weights_path: str | None = None,
        grid: int = 16,
        pathologies: tuple[str, ...] = ("Pneumonia", "Consolidation", "Lung Opacity"),
        batch_size: int = 64,
        **_: Any,
    ):
        self.grid = grid
        self.pathologies = list(pathologies)
        self.batch_size = batch_size
        self.weight = torch.zeros(len(self.pathologies), grid * grid)
        self.bias = torch.zeros(len(self.pathologies))
        self.identity = f"pixels:{grid}"
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise CxrsynError(f"auditor.weights_path={path} does not exist; give a PixelAuditor file")
            saved = load_checkpoint(path, "auditor.weights_path")  # plain data only: no code runs
            self.grid = grid = int(saved.get("grid", grid))  # the file knows the grid it was fitted on
            self.weight, self.bias = saved["weight"].float(), saved["bias"].float()
            self.pathologies = list(saved["pathologies"])
            self.identity = f"pixels:{grid}:{file_digest(path)}"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(images.float(), self.grid).flatten(1)
        small = small - small.mean(dim=1, keepdim=True)
        return small / small.std(dim=1, keepdim=True).clamp_min(1e-6)

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.embed(images) @ self.weight.T + self.bias)

    def fit(
        self, images: torch.Tensor, labels: np.ndarray, l2: float = 1e-3, steps: int = 200
    ) -> PixelAuditor:
        """Logistic regression (L-BFGS, L2 penalty ``l2``) of ``labels`` (1 = pneumonia) on the embedding;
        every pathology gets the same weights (the pixels cannot tell them apart)."""
        x = self.embed(images)
        y = torch.tensor(np.array(labels, dtype=np.float32))
        w = torch.zeros(x.shape[1], requires_grad=True)
        b = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.binary_cross_entropy_with_logits(x @ w + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight = w.detach().expand(len(self.pathologies), -1).clone()
        self.bias = b.detach().expand(len(self.pathologies)).clone()
        return self

    def save(self, path: str | os.PathLike) -> None:
        torch.save(
            {"weight": self.weight, "bias": self.bias, "pathologies": self.pathologies, "grid": self.grid},
            path,
        )


class PhantomAuditor(PixelAuditor):
    """``source=phantom``'s auditor: a ``PixelAuditor`` fitted on a phantom set of its own (``root``,
    generated on first use with its own seed), so the audit runs end to end offline. A stand-in."""

    def __init__(
        self, root: str, n_per_class: int = 100, seed: int = 21, image_size: int = 128, **kwargs: Any
    ):
        super().__init__(**kwargs)
        from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN, read_manifest
        from cxrsyn.phantom.simulator import PhantomSpec, write_phantom_dataset

        spec = PhantomSpec(
            domain="generator_like",
            n_per_class=n_per_class,
            seed=seed,
            image_size=image_size,
            shortcut_strength=0.0,
        )
        write_phantom_dataset(root, spec, show_progress=False)
        table = read_manifest(root)
        from cxrsyn.data.images import read_grayscale

        images = torch.stack(
            [torch.from_numpy(read_grayscale(Path(root) / p))[None] for p in table[PATH_COLUMN]]
        )
        self.fit(images, table[LABEL_COLUMN].to_numpy())
        self.identity = f"phantom-pixels:{self.grid}:{seed}:{n_per_class}:{image_size}"
