"""``summarize`` and ``prepare`` of ``python -m cxrsyn.data`` on a composed config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cxrsyn.core.compose import build_datamodule, instantiate_node
from cxrsyn.core.fileio import write_json
from cxrsyn.core.secrets import redact
from cxrsyn.data.sources import SourceIndex, check_inside_root
from cxrsyn.data.summary import describe, summarize, verify


def summarize_command(cfg: DictConfig) -> dict[str, Any]:
    """Index the source (no decoding) and print what was found, selected and skipped."""
    source = instantiate_node(cfg, "data", _convert_="object")
    source.prepare()
    summary = summarize(source, check_inside_root(source, source.index()))
    if cfg.get("verify"):
        summary["verify"] = verify(source, summary)
    return _report(cfg, summary)


def prepare(cfg: DictConfig) -> dict[str, Any]:
    """Make the source ready: generate it (phantom) and, with ``cache: true``, decode every image once."""
    source = instantiate_node(cfg, "data", _convert_="object")
    datamodule = build_datamodule(cfg, train_source=False, test_sets={source.name: source})
    datamodule.prepare_data()
    table, counts = datamodule.index_source(source)
    summary = summarize(source, SourceIndex(table, counts["skipped"], counts["found"]))
    if "cache" in counts:
        summary["cache"] = counts["cache"]
        print(f"cache: {counts['cache']} (image_size {datamodule.image_size}, resize {datamodule.resize})")
    return _report(cfg, summary)


def _report(cfg: DictConfig, summary: dict[str, Any]) -> dict[str, Any]:
    summary = redact(summary)  # printed and saved: no key, even one typed into a path
    for line in describe(summary):
        print(line)
    if cfg.get("summary_file"):
        write_json(Path(cfg.summary_file), summary)
    return summary
