"""Attribute readers: models that say what an image shows of a prompted attribute (sex, age, projection), for
attribute fidelity (``cxrsyn.auditing.attributes``). Pluggable like the label auditor:

- torchxrayvision's published models, from a weights file on this machine (never downloaded here):
  ``TorchXRayVisionSexReader`` (MIRA ResNet-34, trained on CheXpert: male / female),
  ``TorchXRayVisionAgeReader`` (RIKEN SE-ResNeXt, trained on NIH adults: age in years; TorchScript file),
  ``TorchXRayVisionViewReader`` (xinario ResNet-50: frontal / lateral only; it cannot tell PA from AP);
- ``TimmAttributeReader``: a classifier the user trained, either a ``python -m cxrsyn.train`` checkpoint
  whose labels were the attribute (one logit: ``classes`` = [value of label 0, value of label 1]) or a timm
  state dict with one output per class; loaded with ``weights_only=True``;
- ``PixelAttributeReader`` / ``PhantomAttributeReader``: softmax regression on downsampled pixels, the
  latter fitted on phantom films whose attributes are known (``source=phantom`` and the tests). A stand-in.

Every reader takes (N, 1, H, W) float images in [0, 1], bone bright, and has ``attribute`` (the grid column
it reads), ``identity``, ``output`` (``classes``: ``read`` returns one of ``classes`` per image; ``years``:
``read`` returns ages in years) and ``value_map`` (prompted value -> the class it is read as; values not
in it are taken as they are).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrsyn.auditing.models import file_digest, resize_images
from cxrsyn.core.errors import CxrsynError

XRV_RELEASES = "https://github.com/mlmed/torchxrayvision/releases/download/v1/"
XRV_FILES = {  # reader -> the file torchxrayvision's class downloads (baseline_models/<name>/__init__.py)
    "sex": "mira_sex_resnet-all_epoch_13-step_7125.ckpt",
    "age": "baseline_models_riken_xray_age_every_model_age_senet154_v2_tl_26_ft_7_fp32.pt",
    "view": "xinario_chestViewSplit_resnet-50.pt",
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
FRONTAL_VIEWS = {"PA erect": "Frontal", "AP supine": "Frontal", "AP erect": "Frontal", "lateral": "Lateral"}


def _xrv_weights(reader: str, weights_path: str | None, cache_dir: str | None, key: str) -> Path:
    """The local weights file of a torchxrayvision reader, or one line naming the file and its URL."""
    name = XRV_FILES[reader]
    default = Path(os.path.expanduser(cache_dir or "~/.torchxrayvision/models_data")) / name
    path = Path(weights_path) if weights_path else default
    if not path.is_file():
        raise CxrsynError(
            f"{key}: torchxrayvision's {reader} model is not on this machine ({path}); download "
            f"{XRV_RELEASES}{name} to {default} or set {key}.weights_path=FILE"
        )
    return path


def _imagenet(images: torch.Tensor, size: int) -> torch.Tensor:
    x = resize_images(images.float(), size).repeat(1, 3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class _Reader:
    attribute: str
    classes: list[str]
    output = "classes"
    value_map: dict[str, str]
    batch_size = 32
    identity = ""

    def class_of(self, value: str) -> str:
        """The class a prompted value should be read as."""
        return self.value_map.get(str(value), str(value))

    def read(self, images: torch.Tensor) -> list[Any]:
        parts = [self._read(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)]
        return [item for part in parts for item in part]

    def _read(self, images: torch.Tensor) -> list[Any]:
        raise NotImplementedError


class _LogitReader(_Reader):
    """A network with one output per class (or one logit for two classes); reads the most likely class."""

    net: torch.nn.Module

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _read(self, images: torch.Tensor) -> list[str]:
        logits = self.net(self._inputs(images)).float()
        if logits.ndim == 1 or logits.shape[1] == 1:
            chosen = (logits.reshape(-1) > 0).long()
        else:
            chosen = logits[:, : len(self.classes)].argmax(dim=1)
        return [self.classes[int(i)] for i in chosen]


class TorchXRayVisionSexReader(_LogitReader):
    """torchxrayvision's ``baseline_models.mira.SexModel`` (ResNet-34 on CheXpert) from a local file."""

    def __init__(self, weights_path: str | None = None, cache_dir: str | None = None, batch_size: int = 32):
        import torchvision

        path = _xrv_weights("sex", weights_path, cache_dir, "attributes.readers.sex")
        net = torchvision.models.resnet34(weights=None)
        net.fc = torch.nn.Linear(net.fc.in_features, 2)
        state = _load_weights_only(path, "attributes.readers.sex")
        state = state.get("state_dict", state)
        try:
            net.load_state_dict({key.removeprefix("model."): value for key, value in state.items()})
        except (RuntimeError, AttributeError) as error:
            raise CxrsynError(
                f"{path} is not torchxrayvision's MIRA sex model ({type(error).__name__}); download it again"
            ) from None
        self.net = net.eval()
        self.attribute, self.classes = "sex", ["male", "female"]  # the model's order: Male, Female
        self.value_map: dict[str, str] = {}
        self.batch_size = batch_size
        self.identity = f"torchxrayvision:mira-sex:{file_digest(path)}"

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        # MIRA's scale: 0-255 gray copied to three channels, no further normalisation
        return resize_images(images.float(), 224).repeat(1, 3, 1, 1) * 255.0


class TorchXRayVisionViewReader(_LogitReader):
    """torchxrayvision's ``baseline_models.xinario.ViewModel`` (ResNet-50: frontal vs lateral) from a local
    file. Every frontal projection (PA or AP, erect or supine) is read as ``Frontal``."""

    def __init__(
        self,
        weights_path: str | None = None,
        cache_dir: str | None = None,
        value_map: Mapping[str, str] | None = None,
        batch_size: int = 32,
    ):
        import torchvision

        path = _xrv_weights("view", weights_path, cache_dir, "attributes.readers.projection")
        net = torchvision.models.resnet50(weights=None)
        try:
            net.load_state_dict(_load_weights_only(path, "attributes.readers.projection"))
        except (RuntimeError, AttributeError) as error:
            raise CxrsynError(
                f"{path} is not torchxrayvision's xinario view model ({type(error).__name__}); download it again"
            ) from None
        self.net = net.eval()
        self.attribute, self.classes = "projection", ["Frontal", "Lateral"]
        self.value_map = dict(value_map or FRONTAL_VIEWS)
        self.batch_size = batch_size
        self.identity = f"torchxrayvision:xinario-view:{file_digest(path)}"

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return _imagenet(images, 224)

    @torch.no_grad()
    def _read(self, images: torch.Tensor) -> list[str]:
        logits = self.net(self._inputs(images))[:, :2]  # the model's other outputs are unused
        return [self.classes[int(i)] for i in logits.argmax(dim=1)]


class TorchXRayVisionAgeReader(_Reader):
    """torchxrayvision's ``baseline_models.riken.AgeModel`` (trained on NIH adults; a TorchScript file) from a
    local file: age in years, binned into the audited set's age bands by the audit."""

    output = "years"

    def __init__(self, weights_path: str | None = None, cache_dir: str | None = None, batch_size: int = 16):
        path = _xrv_weights("age", weights_path, cache_dir, "attributes.readers.age_band")
        try:
            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        except (RuntimeError, ValueError) as error:
            raise CxrsynError(
                f"{path} is not torchxrayvision's RIKEN age model ({type(error).__name__}); download it again"
            ) from None
        self.attribute, self.classes = "age_band", []
        self.value_map = {}
        self.batch_size = batch_size
        self.identity = f"torchxrayvision:riken-age:{file_digest(path)}"

    @torch.no_grad()
    def _read(self, images: torch.Tensor) -> list[float]:
        return [float(v) for v in self.net(_imagenet(images, 320)).float().reshape(-1)]


class TimmAttributeReader(_LogitReader):
    """A classifier the user trained to read one attribute.

    ``checkpoint``: a ``python -m cxrsyn.train`` checkpoint (``<run>/checkpoints/last.ckpt``) trained with the
    attribute as the label (``classes`` = [the value of label 0, the value of label 1]), or a timm state dict
    (``.pt``/``.pth``) of ``backbone`` with one output per class, one input channel. Loaded with
    ``weights_only=True``. Inputs are normalised as the backbone's pretrained config says (as in training).
    """

    def __init__(
        self,
        checkpoint: str,
        attribute: str,
        classes: Sequence[str],
        backbone: str | None = None,
        value_map: Mapping[str, str] | None = None,
        input_size: int = 224,
        batch_size: int = 32,
    ):
        import timm

        from cxrsyn.models.backbone import check_backbone_name, input_normalisation

        key = f"attributes.readers.{attribute}"
        path = Path(checkpoint)
        if not path.is_file():
            raise CxrsynError(
                f"{key}.checkpoint={path} does not exist; give a python -m cxrsyn.train checkpoint or a timm "
                "state dict of the attribute classifier"
            )
        saved = _load_weights_only(path, key)
        state = saved.get("state_dict", saved)
        if any(name.startswith("net.") for name in state):  # cxrsyn.train's LightningModule
            state = {name[4:]: value for name, value in state.items() if name.startswith("net.")}
            backbone = backbone or (saved.get("hyper_parameters") or {}).get("backbone")
            outputs = 1
            if len(classes) != 2:
                raise CxrsynError(
                    f"{key}.classes={list(classes)}: a cxrsyn.train checkpoint has one logit, so give two "
                    "classes, [the value of label 0, the value of label 1]"
                )
        else:
            outputs = len(classes)
        if not backbone:
            raise CxrsynError(f"{key}.backbone is needed for {path} (a state dict does not name its model)")
        check_backbone_name(backbone)
        net = timm.create_model(backbone, pretrained=False, num_classes=outputs, in_chans=1)
        try:
            net.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0][:160]
            raise CxrsynError(
                f"{key}.checkpoint={path} does not fit {backbone} with {outputs} output(s) ({first}); give the "
                "backbone it was trained with and one class per output"
            ) from None
        self.net = net.eval()
        self.mean, self.std = input_normalisation(net)
        self.attribute, self.classes = attribute, [str(c) for c in classes]
        self.value_map = dict(value_map or {})
        self.input_size = input_size
        self.batch_size = batch_size
        self.identity = f"timm:{backbone}:{attribute}:{file_digest(path)}"

    def _inputs(self, images: torch.Tensor) -> torch.Tensor:
        return (resize_images(images.float(), self.input_size) - self.mean) / self.std


def _load_weights_only(path: Path, key: str) -> dict[str, Any]:
    import pickle

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needs = " ".join(str(error).split())[:120]
        raise CxrsynError(
            f"{key}: {path} needs more than tensors to load ({needs}); it was not unpickled (unpickling can run "
            "code): save the weights as a state dict"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise CxrsynError(f"{key}: {path} is not a torch weights file ({type(error).__name__})") from None
    if not isinstance(saved, dict):
        raise CxrsynError(f"{key}: {path} holds a {type(saved).__name__}, not a state dict")
    return saved


class PixelAttributeReader(_Reader):
    """Softmax regression of ``classes`` on the image downsampled to ``grid`` x ``grid`` (zero mean, unit
    variance): weights from ``weights_path`` (``save`` writes them) or ``fit``. A stand-in for the tests and
    the phantom; it says nothing about real radiographs."""

    def __init__(
        self,
        attribute: str,
        classes: Sequence[str] = (),
        weights_path: str | None = None,
        value_map: Mapping[str, str] | None = None,
        grid: int = 32,
        batch_size: int = 256,
    ):
        self.attribute = attribute
        self.classes = [str(c) for c in classes]
        self.value_map = dict(value_map or {})
        self.grid = grid
        self.batch_size = batch_size
        self.weight = torch.zeros(len(self.classes), grid * grid)
        self.bias = torch.zeros(len(self.classes))
        self.identity = f"pixels:{attribute}:{grid}"
        if weights_path:
            path = Path(weights_path)
            if not path.is_file():
                raise CxrsynError(f"attributes.readers.{attribute}.weights_path={path} does not exist")
            saved = _load_weights_only(path, f"attributes.readers.{attribute}")
            self.grid = int(saved["grid"])
            self.weight, self.bias = saved["weight"].float(), saved["bias"].float()
            self.classes = list(saved["classes"])
            self.identity = f"pixels:{attribute}:{self.grid}:{file_digest(path)}"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        small = F.adaptive_avg_pool2d(images.float(), self.grid).flatten(1)
        small = small - small.mean(dim=1, keepdim=True)
        return small / small.std(dim=1, keepdim=True).clamp_min(1e-6)

    def _read(self, images: torch.Tensor) -> list[str]:
        logits = self.embed(images) @ self.weight.T + self.bias
        return [self.classes[int(i)] for i in logits.argmax(dim=1)]

    def fit(
        self, images: torch.Tensor, values: Sequence[str], l2: float = 1e-3, steps: int = 300
    ) -> PixelAttributeReader:
        """Softmax regression (L-BFGS, L2 penalty ``l2``) of the classes of ``values`` (prompted values,
        mapped by ``value_map``) on the embedding; the classes are those seen, in sorted order."""
        targets = [self.class_of(value) for value in values]
        self.classes = sorted(set(targets))
        index = {name: i for i, name in enumerate(self.classes)}
        x = torch.cat([self.embed(images[i : i + 256]) for i in range(0, len(images), 256)])
        y = torch.tensor([index[t] for t in targets])
        w = torch.zeros(len(self.classes), x.shape[1], requires_grad=True)
        b = torch.zeros(len(self.classes), requires_grad=True)
        optimizer = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ w.T + b, y) + l2 * (w * w).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def save(self, path: str | os.PathLike) -> None:
        torch.save(
            {"weight": self.weight, "bias": self.bias, "classes": self.classes, "grid": self.grid}, path
        )


class PhantomAttributeReader(PixelAttributeReader):
    """``source=phantom``'s reader: a ``PixelAttributeReader`` fitted on phantom films whose attributes are
    known, drawn in both domains (generator-like and real-like) so that it reads the audited set and the
    reference stand-ins alike. The films are generated once under ``root`` (``<root>/<domain>``)."""

    def __init__(
        self,
        root: str,
        attribute: str,
        attributes: Mapping[str, Sequence[str]] | None = None,
        value_map: Mapping[str, str] | None = None,
        n_per_class: int = 120,
        seed: int = 23,
        image_size: int = 128,
        grid: int = 32,
        **kwargs: Any,
    ):
        super().__init__(attribute, value_map=value_map, grid=grid, **kwargs)
        from cxrsyn.core.manifest import PATH_COLUMN, read_manifest
        from cxrsyn.data.images import read_grayscale
        from cxrsyn.phantom.grid import READABLE_ATTRIBUTES
        from cxrsyn.phantom.simulator import PhantomSpec, write_phantom_dataset

        grid_attributes = {name: list(values) for name, values in (attributes or READABLE_ATTRIBUTES).items()}
        if attribute not in grid_attributes:
            raise CxrsynError(
                f"attributes.readers.{attribute}: the phantom reader draws {sorted(grid_attributes)}; "
                f"{attribute!r} is not one of them"
            )
        images, values = [], []
        for number, domain in enumerate(("generator_like", "real_like")):
            spec = PhantomSpec(
                domain=domain,
                n_per_class=n_per_class,
                seed=seed + number,
                image_size=image_size,
                shortcut_strength=0.0,
                attributes=grid_attributes,
            )
            folder = write_phantom_dataset(Path(root) / domain, spec, show_progress=False)
            table = read_manifest(folder)
            for path, value in zip(table[PATH_COLUMN], table[attribute].astype(str), strict=True):
                pixels = torch.from_numpy(read_grayscale(folder / path))[None, None]
                images.append(resize_images(pixels, image_size)[0])
                values.append(value)
        self.fit(torch.stack(images), values)
        self.identity = f"phantom-pixels:{attribute}:{grid}:{seed}:{n_per_class}:{image_size}"


def with_value_map(reader: Any, value_map: Mapping[str, str] | None) -> Any:
    """``reader`` with extra prompted-value -> class entries (``attributes.value_maps.<attribute>``)."""
    if value_map:
        reader.value_map = {**reader.value_map, **{str(k): str(v) for k, v in value_map.items()}}
    return reader


def years_to_band(years: float, bands: Sequence[str]) -> str:
    """The band ("low-high" in years) holding ``years`` (rounded down), else the nearest band."""
    spans = [_band_span(band) for band in bands]
    age = float(np.floor(years))
    for band, (low, high) in zip(bands, spans, strict=True):
        if low <= age <= high:
            return band
    distances = [min(abs(age - low), abs(age - high)) for low, high in spans]
    return bands[int(np.argmin(distances))]


def _band_span(band: str) -> tuple[float, float]:
    text = str(band).strip()
    try:
        if text.endswith("+"):  # "65+": open-ended, as RSNA's subgroup bands are written
            return float(text[:-1]), float("inf")
        low, high = text.split("-")
        return float(low), float(high)
    except ValueError:
        raise CxrsynError(f"age band {band!r} is not 'low-high' in years (e.g. 18-39)") from None
