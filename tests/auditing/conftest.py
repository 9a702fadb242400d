"""Phantom sets for the audit tests, made once per session: a real-like reference set, and generator-like
sets with and without planted problems (copies of reference images, a class-linked label bar, flipped
labels)."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.sources import PhantomFolder
from cxrsyn.phantom.simulator import write_phantom_dataset

N_PER_CLASS = 40
SIZE = 128
AUDIT_SIZE = 128  # image_size the audit tests run at
COPIED = (3, 17, 44, 61)  # reference rows planted as near-copies
FLIPPED = (5, 12, 50, 70)  # audited rows whose label is flipped


def reference_overrides(root: Path) -> list[str]:
    """Overrides that make test set ``phantom_real`` the reference folder of ``reference_set``."""
    return [
        "test_sets=[phantom_real]",
        f"test_sets.phantom_real.root={root}",
        f"test_sets.phantom_real.n_per_class={N_PER_CLASS}",
        f"test_sets.phantom_real.image_size={SIZE}",
    ]


@pytest.fixture(scope="session")
def audit_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("audit_data")


@pytest.fixture(scope="session")
def reference_set(audit_data: Path) -> Path:
    """Real-like phantom films, as the config's phantom_real test set with ``reference_overrides``."""
    root = audit_data / "real_like"
    _write(
        PhantomFolder(root=str(root), domain="real_like", n_per_class=N_PER_CLASS, seed=1, image_size=SIZE)
    )
    return root


def _write(folder: PhantomFolder) -> None:
    # in this process: worker processes would cost more to start than these few images take
    write_phantom_dataset(folder.root, folder.spec(), show_progress=False, workers=1)


def perturb(image: Image.Image, rng: np.random.Generator) -> bytes:
    """Crop 2-5% off each side, resize (to 85-95%), change brightness and contrast by up to 10%, recompress
    as JPEG (quality 85)."""
    width, height = image.size
    left, top, right, bottom = (rng.uniform(0.02, 0.05) for _ in range(4))
    image = image.crop(
        (int(left * width), int(top * height), int((1 - right) * width), int((1 - bottom) * height))
    )
    scale = rng.uniform(0.85, 0.95)
    image = image.resize((int(image.width * scale), int(image.height * scale)), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _generator_like(root: Path, shortcut: float) -> pd.DataFrame:
    _write(
        PhantomFolder(
            root=str(root),
            domain="generator_like",
            n_per_class=N_PER_CLASS,
            seed=3,
            image_size=SIZE,
            shortcut_strength=shortcut,
            framing_shortcut=False,
            watermark_shape="label",
        )
    )
    return pd.read_csv(root / "manifest.csv")


@pytest.fixture(scope="session")
def planted_set(audit_data: Path, reference_set: Path) -> dict:
    """Generator-like films with the label bar on every pneumonia image and on no normal one, four flipped
    labels, and four reference films copied in after crop, resize, brightness/contrast and JPEG."""
    root = audit_data / "planted"
    table = _generator_like(root, shortcut=1.0)
    true_labels = table["label"].to_numpy().copy()
    table.loc[list(FLIPPED), "label"] = 1 - table.loc[list(FLIPPED), "label"]
    reference = pd.read_csv(reference_set / "manifest.csv")
    rng = np.random.default_rng(7)
    copies = []
    for number, row in enumerate(COPIED):
        source = reference.iloc[row]
        path = f"images/copied_{number}.jpg"
        with Image.open(reference_set / source["path"]) as image:
            (root / path).write_bytes(perturb(image.convert("L"), rng))
        copies.append({"path": path, "label": int(source["label"]), "source": source["path"]})
    table = pd.concat([table[["path", "label"]], pd.DataFrame(copies)[["path", "label"]]], ignore_index=True)
    true_labels = np.concatenate([true_labels, [c["label"] for c in copies]])
    table.to_csv(root / "manifest.csv", index=False)
    return {
        "root": root,
        "copies": {c["path"]: c["source"] for c in copies},
        "flipped": [str(table["path"].iloc[row]) for row in FLIPPED],
        "true_labels": true_labels,
    }


@pytest.fixture(scope="session")
def clean_set(audit_data: Path) -> Path:
    """Generator-like films with no class-linked defect (shortcut_strength 0), no copies, no flips."""
    root = audit_data / "clean"
    _generator_like(root, shortcut=0.0)
    return root


@pytest.fixture(scope="session")
def marked_pair(audit_data: Path) -> dict[str, Path]:
    """Two real-like phantom sets that differ only by a burned-in label in the bottom-right band: on every
    film of ``marked``, on none of ``unmarked`` (other seeds, same settings), 50 + 50 films each."""
    roots = {}
    for name, rate, seed in (("marked", 1.0, 3), ("unmarked", 0.0, 4)):
        roots[name] = audit_data / f"pair_{name}"
        _write(
            PhantomFolder(
                root=str(roots[name]),
                domain="real_like",
                n_per_class=50,
                seed=seed,
                image_size=64,
                bottom_mark_rate=rate,
            )
        )
    return roots


@pytest.fixture(scope="session")
def other_real_like(audit_data: Path) -> Path:
    """Clean real-like films of other patients (another seed): exchangeable with the reference set, so the
    contamination rule's false-positive rate applies to them as stated."""
    root = audit_data / "other_real_like"
    _write(
        PhantomFolder(root=str(root), domain="real_like", n_per_class=N_PER_CLASS, seed=2, image_size=SIZE)
    )
    return root


def fit_auditor(root: Path, labels: np.ndarray, out: Path) -> Path:
    """A PixelAuditor fitted on ``labels`` of the images in ``root`` (read as the audit reads them): an
    auditor that knows the true labels, so it must contradict exactly the flipped ones."""
    from cxrsyn.auditing.models import PixelAuditor

    table = pd.read_csv(root / "manifest.csv")
    prep = Preprocessing(AUDIT_SIZE, "stretch", 0.0, True)
    images = (
        torch.stack([torch.from_numpy(decode_resized(root / p, prep))[None] for p in table["path"]]) / 255.0
    )
    PixelAuditor(grid=32).fit(images, labels).save(out)
    return out


@pytest.fixture(scope="session")
def planted_auditor(planted_set: dict, audit_data: Path) -> Path:
    return fit_auditor(planted_set["root"], planted_set["true_labels"], audit_data / "planted_auditor.pt")


@pytest.fixture(scope="session")
def clean_auditor(clean_set: Path, audit_data: Path) -> Path:
    labels = pd.read_csv(clean_set / "manifest.csv")["label"].to_numpy()
    return fit_auditor(clean_set, labels, audit_data / "clean_auditor.pt")


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target
