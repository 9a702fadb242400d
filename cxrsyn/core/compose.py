"""Config composition shared by every entry point: a config node instantiated (datasets as their phantom
stand-ins under ``source=phantom``), the DataModule from ``datamodule``, ``data`` and ``test_sets``, a
section as plain values or as a settings dataclass, and the resolved config without secrets that runs save
and log."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.secrets import redact

RESOLVED_CONFIG_NAME = "config.yaml"
T = TypeVar("T")


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The config with every interpolation resolved and secrets removed: what is saved and logged."""
    return redact(OmegaConf.to_container(cfg, resolve=True))


SOURCES = ("real", "phantom")
STAND_IN_KEY = "phantom"
# what a dataset config selects from its images rather than where they live: set on a dataset, it applies to
# its phantom stand-in too (data.max_per_class=25 subsamples the stand-in under source=phantom)
SELECTION_KEYS = ("max_per_class", "max_total", "subsample_seed", "stratify_by", "repeat", "repeat_to")
MIX_KEY = "parts"


def source_node(cfg: DictConfig, key: str) -> Any:
    """The config at ``key`` for the chosen ``source``. A dataset config may carry its phantom stand-in under
    ``phantom:``; with ``source=phantom`` that stand-in is used, with ``source=real`` the dataset itself."""
    node = OmegaConf.select(cfg, key)
    source = cfg.get("source", "real")
    if source not in SOURCES:
        raise CxrsynError(f"source={source!r} is unknown; use one of {', '.join(SOURCES)}")
    if not isinstance(node, DictConfig) or STAND_IN_KEY not in node or "_target_" not in node:
        return node
    if source == "phantom":
        stand_in = node[STAND_IN_KEY]
        chosen = {key: node[key] for key in SELECTION_KEYS if node.get(key) is not None}
        return OmegaConf.merge(stand_in, chosen) if chosen else stand_in
    resolved = OmegaConf.to_container(node, resolve=True)
    del resolved[STAND_IN_KEY]
    return OmegaConf.create(resolved)


def instantiate_node(cfg: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(cfg[key])`` (for datasets, see ``source_node``), with known failures as
    one line naming the config key."""
    node = OmegaConf.select(cfg, key)
    if isinstance(node, DictConfig) and MIX_KEY in node and "_target_" not in node:
        raise CxrsynError(
            f"config '{key}' is a mix of training sources ({', '.join(map(str, node[MIX_KEY] or {}))}); this "
            f"command reads one source: choose one with {key}=<name of a file in conf/data/>"
        )
    try:
        return instantiate(source_node(cfg, key), **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        while isinstance(cause, InstantiationException):
            cause = cause.__cause__
        if isinstance(cause, CxrsynError):
            raise cause from None
        if isinstance(cause, TypeError):  # unknown or missing arguments in a config file or override
            raise CxrsynError(f"config '{key}': {cause}; fix the key in conf/ or in your overrides") from None
        raise


def build_datamodule(
    cfg: DictConfig, train_source: bool = True, test_sets: dict[str, Any] | None = None
) -> Any:
    """The DataModule from ``datamodule``, with ``data`` as its training source (unless ``train_source`` is
    False) and every ``test_sets`` entry (unless ``test_sets`` gives them)."""
    train = training_sources(cfg) if train_source else None
    if test_sets is None:
        test_sets = {
            str(name): instantiate_node(cfg, f"test_sets.{name}", _convert_="object")
            for name in (cfg.get("test_sets") or {})
        }
    # partial, then called: sources are objects already, which Hydra would merge back into config nodes
    make_datamodule = instantiate_node(cfg, "datamodule", _partial_=True)
    try:
        return make_datamodule(train=train, test_sets=test_sets)
    except TypeError as error:
        raise CxrsynError(
            f"config 'datamodule': {error}; fix the key in conf/ or in your overrides"
        ) from None


def training_sources(cfg: DictConfig) -> Any:
    """``data`` instantiated: one source, or a mix (``data.parts``: name -> dataset config, each with its own
    selection; a part set to null is left out) as a list of sources named by their part."""
    node = OmegaConf.select(cfg, "data")
    if not (isinstance(node, DictConfig) and MIX_KEY in node and "_target_" not in node):
        return instantiate_node(cfg, "data", _convert_="object")
    sources = []
    for name, part in (node[MIX_KEY] or {}).items():
        if part is None:
            continue
        source = instantiate_node(cfg, f"data.{MIX_KEY}.{name}", _convert_="object")
        source.part = str(name)
        sources.append(source)
    if not sources:
        raise CxrsynError(
            "data.parts has no part left (every part is null); keep at least one training source"
        )
    return sources


def override_set(overrides: str | list[str]) -> frozenset[str]:
    """Overrides (``a=1,b=x`` or a list) as a set of ``key=value``, keys without Hydra's ``+``/``~`` and
    booleans in lower case (Hydra's sweeper writes ``True`` for a swept ``true``): how a study names an arm,
    a compared side or an excluded cell of its grid."""
    items = overrides.split(",") if isinstance(overrides, str) else list(overrides)
    parts = set()
    for item in items:
        key, _, value = str(item).partition("=")
        parts.add(f"{key.lstrip('+~')}={value.lower() if value.lower() in ('true', 'false') else value}")
    return frozenset(parts)


def excluded_cell(cfg: DictConfig, overrides: list[str]) -> list[str] | None:
    """The ``experiment.exclude`` cell (a list of overrides) this job's overrides contain, if any: grid
    points a study's sweep makes but that do not exist (the mixing study's real-only arms at k = 0)."""
    job = override_set(overrides)
    for cell in OmegaConf.select(cfg, "experiment.exclude", default=None) or []:
        if override_set([str(item) for item in cell]) <= job:
            return [str(item) for item in cell]
    return None


def settings_at(cfg: DictConfig, key: str) -> dict[str, Any]:
    """The config section at ``key`` as plain, resolved values ({} when absent or null)."""
    settings = OmegaConf.select(cfg, key)
    return dict(OmegaConf.to_container(settings, resolve=True)) if settings else {}


def settings_as(cls: type[T], section: Mapping[str, Any], key: str) -> T:
    """The config section at ``key`` (``settings_at``) as the dataclass ``cls``: each field from the entry of
    its name; entries ``cls`` has no field for are not used; a missing required field is a one-line error."""
    names = [f.name for f in fields(cls)]
    for f in fields(cls):
        if f.name not in section and f.default is MISSING and f.default_factory is MISSING:
            raise CxrsynError(f"config key {key}.{f.name} is missing; set it (e.g. +{key}.{f.name}=VALUE)")
    return cls(**{name: section[name] for name in names if name in section})


def bootstrap_settings(cfg: DictConfig) -> dict[str, Any] | None:
    """``evaluation.bootstrap`` of the config as plain values (null or n_resamples 0: no CIs)."""
    settings = settings_at(cfg, "evaluation.bootstrap")
    return settings if settings.get("n_resamples") else None
