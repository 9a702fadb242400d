"""One check of a composed config, right after composition, before any work: the values users type most
have the right type and range, and no ``+key`` is added that nothing reads.

- ``RULES`` (and ``DATASET_RULES`` for every dataset node: ``data``, the parts of a mix, each test set, a
  pretraining stage's data, and their phantom stand-ins) say what each key allows. A value outside it is one
  line naming the key, the value and what is allowed (``datamodule.image_size='abc'``), not a traceback from
  whatever reads it later.
- ``+key=value`` adds a key the config files do not have. That is right for keys the code reads only when
  present (``OPTIONAL_KEYS``), for new entries of open sections (a test set, a callback, a logger:
  ``OPEN_SECTIONS``), for config groups (``+experiment=``, ``+data@pretrain.data=``), for keys an
  interpolation reads, and for arguments of an instantiated class (``+trainer.profiler=simple``: the class's
  signature is checked). Anything else would be ignored silently (``+epochs=5``), so it is refused with the
  closest existing key.

Checked: ``check_config``; the Hydra commands call ``core.config.check_job`` (the job's overrides from
Hydra), the others ``core.config.compose_or_exit``.
"""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from cxrsyn.core.errors import CxrsynError


@dataclass(frozen=True)
class Rule:
    """What a key allows: ``kind`` int, number, choice or bool; bounds ``low``/``high`` (``high_open``:
    the high bound itself excluded); ``nullable``: null allowed; ``also``: values allowed besides the bounds
    (-1: no limit, as Lightning reads its budgets)."""

    kind: str
    low: float | None = None
    high: float | None = None
    high_open: bool = False
    low_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    also: tuple[int, ...] = ()

    def allowed(self) -> str:
        if self.kind == "choice":
            text = f"one of {', '.join(self.choices)}"
        elif self.kind == "bool":
            text = "true or false"
        else:
            text = "a whole number" if self.kind == "int" else "a number"
            if self.low is not None and self.high is not None:
                left = "(" if self.low_open else "["
                right = ")" if self.high_open else "]"
                text += f" in {left}{self.low:g}, {self.high:g}{right}"
            elif self.low is not None:
                text += f" {'>' if self.low_open else '>='} {self.low:g}"
        text += "".join(f" or {value}" for value in self.also)
        return f"{text} or null" if self.nullable else text

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return str(value) in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if value in self.also:
            return True
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return not (self.high is not None and (value > self.high or (self.high_open and value == self.high)))


# Pillow refuses larger images whatever cxrsyn allows (twice its Image.MAX_IMAGE_PIXELS)
PILLOW_PIXEL_CEILING = 178_956_970
WHOLE_POSITIVE = Rule("int", low=1)
BUDGET = Rule("int", low=1, also=(-1,))  # trainer.max_epochs / max_steps: -1 leaves the limit to the other
FRACTION_BELOW_ONE = Rule("number", low=0, high=1, high_open=True)

# Keys of every dataset node (see the module doc); a key a node does not have is not checked.
DATASET_RULES: dict[str, Rule] = {
    "crop_bottom_fraction": FRACTION_BELOW_ONE,
    "on_bad_file": Rule("choice", choices=("error", "skip")),
    "max_per_class": Rule("int", low=0, nullable=True),
    "max_total": Rule("int", low=0, nullable=True),
    "repeat": Rule("int", low=1, nullable=True),
    "repeat_to": Rule("int", low=1, nullable=True),
    "subsample_seed": Rule("int", nullable=True),
    "n_per_class": WHOLE_POSITIVE,
    "image_size": Rule("int", low=8),
    "window": Rule("choice", choices=("full_range", "min_max", "percentile")),
    "max_image_pixels": Rule("int", low=1, high=PILLOW_PIXEL_CEILING),
    "cache": Rule("bool"),
}
DATASET_NODES = (
    "data",
    "data.parts.*",
    "test_sets.*",
    "pretrain.data",
    "reference",
)  # reference: cxrsyn.readers
STAND_IN_KEY = "phantom"  # a dataset's phantom stand-in (core.compose.STAND_IN_KEY)

# Keys of the primary configs (a key a command's config does not have is not checked).
RULES: dict[str, Rule] = {
    "seed": Rule("int"),
    "num_threads": Rule("int", low=1, nullable=True),
    "workers": Rule("int", low=1, nullable=True),
    "datamodule.image_size": Rule("int", low=8),
    "datamodule.batch_size": WHOLE_POSITIVE,
    "datamodule.eval_batch_size": Rule("int", low=1, nullable=True),
    "datamodule.num_workers": Rule("int", low=0),
    "datamodule.val_fraction": Rule("number", low=0, high=1, low_open=True, high_open=True),
    "datamodule.augment": Rule("bool"),
    "datamodule.resize": Rule("choice", choices=("stretch", "letterbox", "center_crop")),
    "trainer.max_epochs": BUDGET,
    "trainer.max_steps": BUDGET,
    "model.lr": Rule("number", low=0, low_open=True),
    "gradcam.band_fraction": FRACTION_BELOW_ONE,
    "evaluation.bootstrap.n_resamples": Rule("int", low=0, nullable=True),
    "evaluation.bootstrap.alpha": Rule("number", low=0, high=1, low_open=True, high_open=True),
    "crop_bottom_fraction": FRACTION_BELOW_ONE,  # python -m cxrsyn.postprocess
    "image_size": Rule("int", low=8),  # python -m cxrsyn.audit
    "generator.n_per_class": WHOLE_POSITIVE,
    "generator.concurrency": WHOLE_POSITIVE,
    "generator.batch_size": WHOLE_POSITIVE,
    "generator.max_retries": Rule("int", low=0),
    "dry_run": Rule("bool"),
    "n_per_source": Rule(
        "int", low=4
    ),  # python -m cxrsyn.readers make (its evenness: cxrsyn/readers/make.py)
    "resize": Rule("choice", choices=("stretch", "letterbox", "center_crop")),
    "overwrite": Rule("bool"),
}

# Keys the code reads when present that no config file defines (added with +key=...).
OPTIONAL_KEYS = ("pretrain", "pretrain.data", "pretrain.max_epochs", "pretrain.max_steps", "pretrain.enabled")
# Sections whose entries are named by the user: any new entry is read (a test set, a callback, a logger, ...).
OPEN_SECTIONS = (
    "test_sets",
    "data.parts",
    "callbacks",
    "logger",
    "experiment",
    "contamination.extra_references",
    "prices.usd_per_image",
    "grid.attributes",
    "grid.findings",
    "grid.age_years",
)
_INTERPOLATION = re.compile(r"\$\{(?:oc\.select:)?([A-Za-z_][\w.]*)")


def _matches(pattern: str, key: str) -> bool:
    parts, keys = pattern.split("."), key.split(".")
    return len(parts) == len(keys) and all(p in ("*", k) for p, k in zip(parts, keys, strict=True))


def _dataset_nodes(cfg: DictConfig) -> list[str]:
    """The keys of the dataset nodes this config holds (and of their phantom stand-ins)."""
    found = []
    for pattern in DATASET_NODES:
        head, _, tail = pattern.partition(".*")
        if not tail and "*" not in pattern:
            keys = [pattern]
        else:
            node = OmegaConf.select(cfg, head, default=None)
            keys = [f"{head}.{name}" for name in node] if isinstance(node, DictConfig) else []
        for key in keys:
            node = OmegaConf.select(cfg, key, default=None)
            if isinstance(node, DictConfig) and "_target_" in node:
                found.append(key)
                if isinstance(node.get(STAND_IN_KEY), DictConfig):
                    found.append(f"{key}.{STAND_IN_KEY}")
    return found


def _value(cfg: DictConfig, key: str) -> tuple[bool, Any]:
    """(present, value) of ``key``; an interpolation that cannot be resolved counts as absent (whatever
    reads it reports that)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key, default=None) if parent_key else cfg
    if not isinstance(parent, DictConfig) or leaf not in parent or OmegaConf.is_missing(parent, leaf):
        return False, None
    try:
        return True, OmegaConf.select(cfg, key, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - unresolved interpolations, missing values: reported where used
        return False, None


def value_problems(cfg: DictConfig) -> list[str]:
    """One line per key whose value its rule does not allow."""
    checks = list(RULES.items())
    for node in _dataset_nodes(cfg):
        checks += [(f"{node}.{leaf}", rule) for leaf, rule in DATASET_RULES.items()]
    problems = []
    for key, rule in checks:
        present, value = _value(cfg, key)
        if present and not rule.accepts(value):
            shown = repr(value) if isinstance(value, str) else _shown(value)
            problems.append(f"{key}={shown} is not allowed: {key} must be {rule.allowed()}")
    return problems


def _shown(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        return str(OmegaConf.to_container(value, resolve=False))
    return str(value)


# ------------------------------------------------------------------------------------------- added keys
def _added_keys(overrides: Iterable[str], conf_dir: Path) -> list[str]:
    """The value keys that ``+key=`` / ``++key=`` overrides add (config groups and Hydra's keys left out)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    added = []
    for override in OverridesParser.create().parse_overrides([str(item) for item in overrides]):
        if override.type not in (OverrideType.ADD, OverrideType.FORCE_ADD):
            continue
        key = override.key_or_group
        if key.startswith("hydra") or (conf_dir / key).is_dir() or override.package is not None:
            continue
        added.append(key)
    return added


def _interpolated_keys(cfg: DictConfig) -> set[str]:
    container = OmegaConf.to_container(cfg, resolve=False)
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.update(_INTERPOLATION.findall(value))

    walk({key: item for key, item in container.items() if key != "hydra"})
    return found


def _paths(node: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config node (nodes and leaves)."""
    if not isinstance(node, DictConfig):
        return []
    paths = []
    for key in node:
        path = f"{prefix}{key}"
        paths.append(path)
        try:
            child = node._get_node(key)  # without resolving interpolations
        except Exception:  # noqa: BLE001
            continue
        paths += _paths(child, f"{path}.")
    return paths


def closest_keys(key: str, candidates: Sequence[str]) -> list[str]:
    """Existing keys that look like ``key``: by the whole dotted key, then by its last part."""
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    by_leaf: dict[str, list[str]] = {}
    for candidate in candidates:
        by_leaf.setdefault(candidate.rsplit(".", 1)[-1], []).append(candidate)
    for name in difflib.get_close_matches(leaf, list(by_leaf), n=3, cutoff=0.6):
        close += [path for path in by_leaf[name] if path not in close]
    return close[:3]


def _target_parameters(target: str) -> tuple[list[str], bool] | None:
    """The argument names of an instantiated class or function, and whether it takes ``**kwargs`` (None when
    it cannot be imported: whatever instantiates it reports that)."""
    from hydra.utils import get_object

    try:
        obj = get_object(target)
        parameters = inspect.signature(obj).parameters.values()
    except Exception:  # noqa: BLE001
        return None
    names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return names, any(p.kind is p.VAR_KEYWORD for p in parameters)


def unread_key_problem(cfg: DictConfig, key: str, interpolated: set[str]) -> str | None:
    """Why an added ``key`` is read by nothing, with a suggestion; None when something reads it."""
    parts = key.split(".")
    prefixes = [".".join(parts[:n]) for n in range(1, len(parts) + 1)]
    if key in OPTIONAL_KEYS or any(prefix in interpolated for prefix in prefixes):
        return None
    if any(prefix in OPEN_SECTIONS for prefix in prefixes[:-1]):
        return None
    # the nearest instantiated ancestor: a direct argument is checked against its signature; keys deeper
    # inside an argument (datamodule.augmentation.<name>) belong to whatever reads that argument
    for depth in range(len(parts) - 1, 0, -1):
        node = OmegaConf.select(cfg, ".".join(parts[:depth]), default=None)
        if isinstance(node, DictConfig) and "_target_" in node:
            if depth < len(parts) - 1:
                return None
            target = str(node["_target_"])
            signature = _target_parameters(target)
            if signature is None or signature[1] or parts[-1] in signature[0]:
                return None
            owner = ".".join(parts[:depth])
            hint = closest_keys(parts[-1], signature[0])
            suggestion = f"; did you mean {', '.join(f'{owner}.{name}' for name in hint)}?" if hint else ""
            return f"+{key} is not a setting of {owner} ({target}): nothing would read it{suggestion}"
    candidates = [path for path in _paths(cfg) if not path.startswith("hydra")]
    candidates += [path for path in OPTIONAL_KEYS if path not in candidates]
    candidates = [path for path in candidates if path != key]
    hint = closest_keys(key, candidates)
    suggestion = f"; did you mean {' or '.join(hint)}?" if hint else ""
    return (
        f"+{key} adds a key that nothing reads, so it would be ignored{suggestion} "
        "(set an existing key without +)"
    )


def check_config(cfg: DictConfig, overrides: Iterable[str] = (), conf_dir: Path | None = None) -> None:
    """Raise one line for the first value its rule does not allow or added key nothing reads (``conf_dir``:
    where the config groups are, ``core.config.CONF_DIR``; None: only values are checked)."""
    added = _added_keys(overrides, conf_dir) if conf_dir is not None else []
    if added:
        interpolated = _interpolated_keys(cfg)
        for key in added:
            problem = unread_key_problem(cfg, key, interpolated)
            if problem:
                raise CxrsynError(problem)
    problems = value_problems(cfg)
    if problems:
        raise CxrsynError(problems[0])
