"""Make a reader study: a balanced, shuffled sample of a synthetic set and a real reference set, written as a
static page for readers and a key kept apart.

    OUT/reader/index.html   the page (style, script and case list inlined; no server, works from file://)
    OUT/reader/images/      the images: downsampled, bottom crop of their source applied, saved as fresh PNGs
                            (no metadata), named by random case ids
    OUT/reader/README.txt   what to do, for the readers
    OUT/key/key.csv         id -> source, set, label, original file, attributes: never give it to readers
    OUT/study.json          the study's seed, counts, sources and how each reader's order is derived

Cases: ``n_per_source`` from each set, half of them pneumonia (label 1), drawn without replacement with
``seed``. The page lists them sorted by id and shuffles them per reader (``cxrsyn.readers.order``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from cxrsyn.core.compose import instantiate_node, resolved_config
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_csv, write_json, write_text
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN
from cxrsyn.data.decode import Preprocessing, decode_resized
from cxrsyn.data.sources import FILE_COLUMN, apply_exclude_file

READER_DIR, KEY_DIR, IMAGES_DIR = "reader", "key", "images"
KEY_FILE, STUDY_FILE, PAGE_FILE = "key.csv", "study.json", "index.html"
SOURCES = ("synthetic", "real")  # the key's ``source`` values: what readers are asked to tell apart
KEY_WARNING = (
    "This folder holds the answer key of the reader study (which case is real or synthetic, and its label).\n"
    "Do NOT give it to readers. Give them only the reader/ folder.\n"
)
READER_README = (
    "Reader study\n\nOpen index.html in a web browser (double-click it; no internet or server needed).\n"
    "Enter the reader id you were given, answer every case, then press 'Export answers' and send the saved\n"
    "file to the study team. Your answers are kept in this browser as you go: you can close the page and come\n"
    "back later on the same computer and browser.\n"
)
# columns of a source's table that are not attributes of the image
NOT_ATTRIBUTES = {FILE_COLUMN, PATH_COLUMN, LABEL_COLUMN, "patient"}


def make_study(cfg: DictConfig) -> dict[str, Any]:
    out_dir = Path(cfg.out_dir)
    n_per_source = int(cfg.n_per_source)
    if n_per_source < 4 or n_per_source % 2:
        raise CxrsynError(
            f"n_per_source={n_per_source}: use an even number of at least 4 (half pneumonia, half normal)"
        )
    reader_dir = out_dir / READER_DIR
    if reader_dir.exists() and any(reader_dir.iterdir()) and not cfg.get("overwrite", False):
        raise CxrsynError(
            f"{reader_dir} exists and is not empty; choose another out_dir or pass overwrite=true"
        )
    rng = np.random.default_rng(int(cfg.seed))
    drawn, summaries = [], {}
    for source, key in zip(SOURCES, ("data", "reference"), strict=True):
        table, summary = _draw(cfg, key, source, n_per_source, rng)
        drawn.append(table)
        summaries[source] = summary
    cases = pd.concat(drawn, ignore_index=True)
    cases.insert(0, "id", _case_ids(len(cases), rng))
    cases = cases.sort_values("id").reset_index(drop=True)

    if reader_dir.exists():
        shutil.rmtree(reader_dir)
    (reader_dir / IMAGES_DIR).mkdir(parents=True)
    (out_dir / KEY_DIR).mkdir(parents=True, exist_ok=True)
    image_size = int(cfg.image_size)
    for row in cases.itertuples():
        prep = Preprocessing(image_size, str(cfg.resize), float(row.crop_bottom_fraction), True)
        pixels = decode_resized(row.file, prep)
        Image.fromarray(pixels, mode="L").save(reader_dir / IMAGES_DIR / f"{row.id}.png", optimize=True)

    seed = int(cfg.seed)
    study_id = hashlib.sha256(json.dumps([seed, cases["id"].tolist()]).encode()).hexdigest()[:12]
    page_cases = [{"id": case_id, "image": f"{IMAGES_DIR}/{case_id}.png"} for case_id in cases["id"]]
    write_text(reader_dir / PAGE_FILE, page_html({"study": study_id, "seed": seed, "cases": page_cases}))
    write_text(reader_dir / "README.txt", READER_README)
    key = cases.drop(columns=["crop_bottom_fraction"])
    write_csv(out_dir / KEY_DIR / KEY_FILE, key)
    write_text(out_dir / KEY_DIR / "WARNING.txt", KEY_WARNING)
    study = {
        "study": study_id,
        "seed": seed,
        "n_cases": len(cases),
        "n_per_source": n_per_source,
        "counts": {
            source: {
                str(label): int(n) for label, n in group[LABEL_COLUMN].value_counts().sort_index().items()
            }
            for source, group in cases.groupby("source")
        },
        "sources": summaries,
        "image_size": image_size,
        "resize": str(cfg.resize),
        "order": "per reader: Fisher-Yates shuffle of the ids sorted, mulberry32 seeded with FNV-1a of "
        "'<seed>:<reader id>' (cxrsyn/readers/order.py, page/app.js)",
        "reader_folder": READER_DIR,
        "key": f"{KEY_DIR}/{KEY_FILE}",
        "config": resolved_config(cfg),
    }
    write_json(out_dir / STUDY_FILE, study)
    OmegaConf.save(OmegaConf.create(resolved_config(cfg)), out_dir / "config.yaml")
    print(
        f"readers make: {len(cases)} cases ({n_per_source} per source, half pneumonia) from "
        f"{summaries['synthetic']['name']} and {summaries['real']['name']}; give readers {reader_dir} "
        f"(open index.html); the key is {out_dir / KEY_DIR / KEY_FILE}: keep it from them"
    )
    return study


def _draw(
    cfg: DictConfig, key: str, source: str, n_per_source: int, rng: np.random.Generator
) -> tuple[pd.DataFrame, dict[str, Any]]:
    dataset = instantiate_node(cfg, key, _convert_="object")
    dataset.prepare()
    index = apply_exclude_file(dataset, dataset.index())
    table = index.table.reset_index(drop=True)
    name = str(OmegaConf.select(cfg, f"{key}_name") or getattr(dataset, "name", key))
    per_class = n_per_source // 2
    picked = []
    for label in (0, 1):
        rows = np.flatnonzero(table[LABEL_COLUMN].to_numpy() == label)
        if len(rows) < per_class:
            raise CxrsynError(
                f"{key} ({dataset.root}) has {len(rows)} images of label {label}, fewer than the "
                f"{per_class} n_per_source={n_per_source} needs; lower n_per_source"
            )
        picked.extend(rng.choice(rows, size=per_class, replace=False).tolist())
    chosen = table.iloc[sorted(picked)].copy()
    attributes = [column for column in chosen.columns if column not in NOT_ATTRIBUTES]
    out = pd.DataFrame(
        {
            "source": source,
            "set": name,
            LABEL_COLUMN: chosen[LABEL_COLUMN].astype(int).to_numpy(),
            FILE_COLUMN: chosen[FILE_COLUMN].astype(str).to_numpy(),
            "crop_bottom_fraction": float(dataset.crop_bottom_fraction),
        }
    )
    for column in attributes:
        out[column] = chosen[column].to_numpy()
    summary = {
        "name": name,
        "config": key,
        "root": str(dataset.root),
        "read": len(table),
        "selected": len(out),
        "skipped": len(index.skipped),
        "crop_bottom_fraction": float(dataset.crop_bottom_fraction),
        "attributes": attributes,
    }
    print(f"readers make: {key} {name}: read {len(table)}, selected {len(out)}, skipped {len(index.skipped)}")
    return out, summary


def _case_ids(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` distinct random ids (``c`` and 8 hex digits), in the order drawn."""
    ids: list[str] = []
    while len(ids) < n:
        candidate = f"c{int(rng.integers(0, 2**32)):08x}"
        if candidate not in ids:
            ids.append(candidate)
    return ids


def page_html(study: dict[str, Any]) -> str:
    """The page template with its style, script and the study's case list inlined."""
    page = resources.files("cxrsyn.readers") / "page"
    html = (page / "index.html").read_text(encoding="utf-8")
    # "</" cannot end the JSON's script element early: ids and paths are [a-z0-9./], but be safe
    study_json = json.dumps(study).replace("</", "<\\/")
    for marker, text in (
        ("/*STYLE*/", (page / "style.css").read_text(encoding="utf-8")),
        ("/*APP*/", (page / "app.js").read_text(encoding="utf-8")),
        ("/*STUDY*/", study_json),
    ):
        if marker not in html:
            raise RuntimeError(f"the page template lost its {marker} marker")
        html = html.replace(marker, text, 1)
    return html
