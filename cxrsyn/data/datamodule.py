"""The LightningDataModule: training sources split into train/val, and any number of named test sets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pandas as pd
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_csv, write_json, write_text
from cxrsyn.core.manifest import LABEL_COLUMN, PATH_COLUMN, PATIENT_COLUMN
from cxrsyn.core.paths import check_name, inside
from cxrsyn.core.seeding import derive_seed
from cxrsyn.data.cache import build_cache
from cxrsyn.data.dataset import ImageTableDataset
from cxrsyn.data.decode import Preprocessing
from cxrsyn.data.overlap import KIND_COLUMN, check_overlap
from cxrsyn.data.samplers import EpochSampler
from cxrsyn.data.selection import repeat_rows, subsample
from cxrsyn.data.sources import BadFiles, DatasetFolder, label_counts, read_source
from cxrsyn.data.transforms import Augmentation, build_transform

SOURCE_COLUMN = "source"
VAL_COLUMN = "_in_val"  # while the training table is built: the row's side of the train/validation split
TRAIN_FILES_NAME = "train_files.csv"


# images that must stay on one side of the train/validation split: one prompt's (generated sets), else one
# patient's (real sets; each image its own patient where a source names none)
SPLIT_GROUP_COLUMNS = ("prompt", PATIENT_COLUMN)


def split_groups(table: pd.DataFrame) -> tuple[str, np.ndarray]:
    """The column the train/validation split keeps together, and its value per row."""
    for column in SPLIT_GROUP_COLUMNS:
        if column in table.columns:
            values = table[column].astype("string").fillna(table[PATH_COLUMN].astype(str))
            return column, values.astype(str).to_numpy()
    return PATH_COLUMN, table[PATH_COLUMN].astype(str).to_numpy()


def stratified_split(
    labels: np.ndarray,
    val_fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
    require_both_sides: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, val). Per class, rows are shuffled (seeded) and whole groups are moved to the
    validation side in order of first appearance until it holds round(val_fraction * class size) rows of
    that class (at least one); a group never straddles the split. ``groups`` None: each row its own group,
    which gives exactly that many validation rows per class. ``require_both_sides`` False: a class that
    cannot be on both sides (one group) stays in training, for a caller that checks the combined split."""
    labels = np.asarray(labels)
    groups = np.arange(labels.size) if groups is None else pd.factorize(pd.Series(groups))[0]
    rng = np.random.default_rng(derive_seed(seed, 0x5A11))
    in_val: dict[int, bool] = {}
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        wanted = min(len(rows) - 1, max(1, int(round(val_fraction * len(rows)))))
        taken = sum(1 for row in rows if in_val.get(groups[row]))  # groups placed by another class
        sizes = pd.Series(groups[rows]).value_counts(sort=False)
        for group in pd.unique(groups[rows]):
            if group in in_val:
                continue
            size = int(sizes[group])
            in_val[group] = taken < wanted and taken + size <= len(rows) - 1
            taken += size if in_val[group] else 0
    val = np.array([in_val[group] for group in groups], dtype=bool)
    if require_both_sides:
        check_both_sides(labels, val)
    return np.flatnonzero(~val), np.flatnonzero(val)


def check_both_sides(labels: np.ndarray, val: np.ndarray) -> None:
    """Every class of ``labels`` on both sides of the split (``val`` marks the validation rows)."""
    for label in np.unique(labels):
        if not val[labels == label].any() or val[labels == label].all():
            raise CxrsynError(
                f"the train/validation split cannot keep class {label} on both sides without splitting a "
                "prompt or patient group; add images from more prompts or patients"
            )


class CXRDataModule(pl.LightningDataModule):
    """Trains on ``train`` sources (a seeded, label-stratified split gives the validation set) and tests on
    every source in ``test_sets``, by name. Counts of what was read and selected are printed and kept in
    ``self.summary``."""

    def __init__(
        self,
        train: DatasetFolder | Sequence[DatasetFolder] | None = None,
        test_sets: Mapping[str, DatasetFolder] | None = None,
        image_size: int = 224,
        resize: str = "stretch",
        val_fraction: float = 0.2,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        seed: int = 0,
        augmentation: Mapping[str, Any] | None = None,
        augment: bool = True,
        pin_memory: bool = False,
        cache_dir: str | None = None,
        fast_jpeg: bool = True,
        cache_workers: int | None = None,
        allow_overlap: bool = False,
    ):
        super().__init__()
        self.allow_overlap = allow_overlap
        if train is None:
            self.train_sources = []
        else:
            self.train_sources = [train] if isinstance(train, DatasetFolder) else list(train)
        self.test_sources = dict(test_sets or {})
        for name in self.test_sources:  # names of predictions/<name>.csv, gradcam/<name>_*, report figures
            check_name(name, "test set name ")
        for source in self.train_sources:
            if source.part:
                check_name(source.part, "training part name data.parts.")
        if not self.train_sources and not self.test_sources:
            raise CxrsynError(
                "no data: configure a training source (data=...) or a test set (test_sets=[...])"
            )
        self.cache_dir = cache_dir
        self.fast_jpeg = fast_jpeg
        self.cache_workers = cache_workers
        if not 0.0 < val_fraction < 1.0:
            raise CxrsynError(f"datamodule.val_fraction={val_fraction} must lie strictly between 0 and 1")
        self.image_size = image_size
        self.resize = resize
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.augmentation = Augmentation.from_config(augmentation) if augment else None
        self.pin_memory = pin_memory
        build_transform(image_size, resize)  # reject a bad resize policy before any work
        self.summary: dict[str, Any] = {}
        self.tables: dict[str, pd.DataFrame] = {}
        self.held_out: dict[str, list[str]] = {}  # per source (part in a mix, else name): patients split away
        self._datasets: dict[str, ImageTableDataset] = {}

    # ------------------------------------------------------------------------------------------ lifecycle
    def prepare_data(self) -> None:
        """Runs once, on one process: generate what generates itself, decode cached sources once. Every
        source's cheap checks (a missing root) run first."""
        sources = [*self.train_sources, *self.test_sources.values()]
        for source in sources:
            source.check()
        for source in sources:
            source.prepare()
            if source.cache:
                self.index_source(source)

    def dataset(self, name: str) -> ImageTableDataset:
        """A set-up dataset by name: ``train``, ``val`` or ``test/<test set>``."""
        return self._datasets[name]

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        self.summary = {"train_sources": {}, "test_sets": {}}
        if self.train_sources:
            self._setup_training()
        for name, source in self.test_sources.items():
            chosen = [key for key in source.SELECTION_FIELDS if getattr(source, key) is not None]
            if chosen:
                raise CxrsynError(
                    f"test set {name} sets {', '.join(chosen)}: a test set is never subsampled or repeated; "
                    "remove it (it selects training data only)"
                )
            table, summary = self.index_source(source)
            table = table.assign(**{KIND_COLUMN: source.kind})
            self.tables[name] = table
            self.summary["test_sets"][name] = summary
            self._datasets[f"test/{name}"] = ImageTableDataset(
                table, [self._transform(source)], seed=self.seed, windows=[source.deep_window()]
            )
        if self.train_sources and self.test_sources:
            seen = pd.concat([self.tables["train"], self.tables["val"]], ignore_index=True)
            tests = {name: self.tables[name] for name in self.test_sources}
            overlaps = check_overlap(seen, tests, self.allow_overlap)
            self.summary["overlap"] = {"allowed": self.allow_overlap, "found": [asdict(o) for o in overlaps]}
        self._print_summary()

    def _setup_training(self) -> None:
        # Each part is split on its own, with the run's seed, before it is repeated: a part's images fall on
        # the same side whatever the other parts are (the mixing study's arms train on the same real images
        # at a given k and seed), and every copy of an image falls on the side of the image.
        parts, used, split_by, n_groups = [], {}, [], 0
        for i, source in enumerate(self.train_sources):
            table, summary = self.index_source(source)
            seed = self.seed if source.subsample_seed is None else source.subsample_seed
            table, selection = subsample(
                table, source.max_per_class, source.max_total, seed, source.stratify_by, source.label
            )
            group_column, groups = split_groups(table)
            _, val_rows = stratified_split(
                table[LABEL_COLUMN].to_numpy(), self.val_fraction, self.seed, groups, require_both_sides=False
            )
            split_by.append(group_column)
            n_groups += len(np.unique(groups))
            table = table.assign(**{VAL_COLUMN: np.isin(np.arange(len(table)), val_rows)})
            table = repeat_rows(table, source.repeat, source.repeat_to, source.label)
            if selection is not None or source.repeat is not None or source.repeat_to is not None:
                summary["selection"] = {
                    **(selection or {}),
                    "repeat": source.repeat,
                    "repeat_to": source.repeat_to,
                }
            self.summary["train_sources"][source.label] = summary
            used[source.label] = label_counts(table)
            parts.append(table.assign(**{SOURCE_COLUMN: i, KIND_COLUMN: source.kind}))
        train_table = pd.concat(parts, ignore_index=True)
        self.summary["mix"] = {  # what each source gave after selection, and its share of the training data
            label: {**counts, "share": counts["n"] / max(1, len(train_table))}
            for label, counts in used.items()
        }
        counts = train_table[LABEL_COLUMN].value_counts()
        for label, name in ((1, "pneumonia"), (0, "normal")):
            if counts.get(label, 0) < 2:
                raise CxrsynError(
                    f"training data ({', '.join(s.root for s in self.train_sources)}) has "
                    f"{counts.get(label, 0)} {name} image(s); a train/val split needs at least 2 of each class"
                )
        val = train_table.pop(VAL_COLUMN).to_numpy(dtype=bool)
        check_both_sides(train_table[LABEL_COLUMN].to_numpy(), val)
        self.tables["train"] = train_table[~val].reset_index(drop=True)
        self.tables["val"] = train_table[val].reset_index(drop=True)
        self.summary["train"] = label_counts(self.tables["train"])
        self.summary["val"] = label_counts(self.tables["val"])
        self.summary["split"] = {
            "by": "/".join(dict.fromkeys(split_by)),
            "groups": n_groups,
            "val_fraction": self.val_fraction,
            "seed": self.seed,
            "per_part": len(self.train_sources) > 1,
        }
        train_transforms = [self._transform(s, self.augmentation) for s in self.train_sources]
        eval_transforms = [self._transform(s) for s in self.train_sources]
        windows = [s.deep_window() for s in self.train_sources]
        self._datasets["train"] = ImageTableDataset(
            self.tables["train"], train_transforms, self.tables["train"][SOURCE_COLUMN], self.seed, windows
        )
        self._datasets["val"] = ImageTableDataset(
            self.tables["val"], eval_transforms, self.tables["val"][SOURCE_COLUMN], self.seed, windows
        )

    def preprocessing(self, source: DatasetFolder) -> Preprocessing:
        return Preprocessing(
            self.image_size, self.resize, source.crop_bottom_fraction, self.fast_jpeg, source.deep_window()
        )

    def _transform(self, source: DatasetFolder, augmentation: Augmentation | None = None):
        # a cached image is already cropped and resized: only augmentation and the tensor step remain
        return build_transform(
            self.image_size,
            self.resize,
            source.crop_bottom_fraction,
            augmentation,
            already_sized=source.cache,
        )

    def index_source(self, source: DatasetFolder) -> tuple[pd.DataFrame, dict[str, Any]]:
        """The source's samples (from its cache when it has one) and what was read, selected and skipped."""
        index = read_source(source)
        table, skipped = index.table, list(index.skipped)
        if index.held_out:
            self.held_out[source.part or source.name] = list(index.held_out)
        summary: dict[str, Any] = {"dataset": source.kind, "root": str(source.root), "found": index.found}
        if source.cache:
            cache_dir = source.cache_dir or self.cache_dir
            if not cache_dir:
                raise CxrsynError(
                    f"{source.kind} at {source.root} has cache: true but no cache_dir; set paths.cache_dir"
                )
            bad = BadFiles(source.on_bad_file, source.kind)
            bad.skipped = skipped
            result = build_cache(
                table,
                self.preprocessing(source),
                cache_dir,
                source.name,
                bad,
                source.root,
                self.cache_workers,
            )
            table, skipped = result.table, result.skipped
            summary["cache"] = str(result.folder)
        summary.update(label_counts(table))
        summary["skipped"] = skipped
        return table, summary

    def _print_summary(self) -> None:
        def line(counts: Mapping[str, int]) -> str:
            return f"{counts['n']} images ({counts['n_pos']} pneumonia / {counts['n_neg']} normal)"

        def skipped(counts: Mapping[str, Any]) -> str:
            text = (
                f", {len(counts['skipped'])} file(s) skipped (listed in the summary)"
                if counts["skipped"]
                else ""
            )
            found = counts.get("found", {})
            if "excluded" in found:
                text += (
                    f", {found['excluded']} excluded by {found['exclude_file']}"
                    f" ({found['exclude_unmatched']} listed path(s) not in the set)"
                )
            return text

        for root, counts in self.summary["train_sources"].items():
            rank_zero_info(f"data: read training source {root}: {line(counts)}{skipped(counts)}")
        if self.train_sources:
            rank_zero_info(
                f"data: split by {self.summary['split']['by']} (val_fraction={self.val_fraction}, seed={self.seed}): "
                f"train {line(self.summary['train'])}, val {line(self.summary['val'])}"
            )
        for name, counts in self.summary["test_sets"].items():
            rank_zero_info(
                f"data: read test set {name} from {counts['root']}: {line(counts)}{skipped(counts)}"
            )

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint, so evaluation preprocesses test images as training did."""
        return {"image_size": self.image_size, "resize": self.resize}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: the config decides; ``state_dict`` is there for ``cxrsyn.evaluate``."""

    def save_summary(self, path: str | Path) -> None:
        write_json(path, self.summary)

    def save_lists(self, folder: str | Path) -> dict[str, str]:
        """``train_files.csv`` (every training and validation image used, one row per use: a repeated image
        appears once per copy, with its source) and ``held_out/<source>.txt`` (patients a source's patient
        split kept out of it, e.g. the RSNA training patients outside a test selection). Returns what it
        wrote, relative to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written: dict[str, str] = {}
        if "train" in self.tables:
            labels = {i: source.label for i, source in enumerate(self.train_sources)}
            parts = [self.tables[key].assign(split=key) for key in ("train", "val")]
            table = pd.concat(parts, ignore_index=True)
            table = table.assign(source=table[SOURCE_COLUMN].map(labels))
            columns = [PATH_COLUMN, LABEL_COLUMN, PATIENT_COLUMN, "source", KIND_COLUMN, "split", "file"]
            write_csv(folder / TRAIN_FILES_NAME, table[[c for c in columns if c in table.columns]])
            written["train_files"] = TRAIN_FILES_NAME
            self.summary["train"]["files"] = TRAIN_FILES_NAME  # metrics.json data.train: counts and the list
        for name, patients in self.held_out.items():
            path = inside(folder, Path("held_out") / f"{name}.txt")
            write_text(path, "".join(f"{patient}\n" for patient in sorted(patients)))
            written[f"held_out/{name}"] = str(path.relative_to(folder))
        return written

    # -------------------------------------------------------------------------------------------- loaders
    @property
    def test_set_names(self) -> list[str]:
        return list(self.test_sources)

    def train_label_counts(self) -> dict[str, int]:
        self.setup("fit")
        return label_counts(self.tables["train"])

    def _training_epoch(self) -> int:
        """The epoch being trained, read when the sampler is iterated. ``trainer.current_epoch`` counts
        completed epochs and lags by one right after a resume; ``processed`` is right in both cases."""
        if self.trainer is None:
            return 0
        return self.trainer.fit_loop.epoch_progress.current.processed

    def _loader(self, key: str, shuffle: bool, batch_size: int) -> DataLoader:
        dataset = self._datasets[key]
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochSampler(
                len(dataset), shuffle=shuffle, seed=self.seed, epoch_source=self._training_epoch
            ),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0 and shuffle,
            pin_memory=self.pin_memory,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=self.eval_batch_size)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_sources:
            raise CxrsynError("no test set configured; name at least one, e.g. test_sets=[phantom_real]")
        return [self._loader(f"test/{name}", False, self.eval_batch_size) for name in self.test_sources]
