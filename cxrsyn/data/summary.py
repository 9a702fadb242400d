"""What a source holds: counts read, selected and skipped, per split and attribute; checked on request
against the counts the source's reader says were published (``DatasetFolder.published_counts``)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from cxrsyn.data.sources import DatasetFolder, SourceIndex, label_counts

# Per-attribute breakdowns worth printing, by the column that holds them.
BREAKDOWNS = (
    "split",
    "subtype",
    "view",
    "sex",
    "age_flag",
    "detailed_class",
    "domain",
    "projection",
    "pneumonia_label",
    "expert_set",
    "label_method",
    "manufacturer",
)


def summarize(source: DatasetFolder, index: SourceIndex) -> dict[str, Any]:
    table = index.table
    summary: dict[str, Any] = {
        "dataset": source.kind,
        "root": str(source.root),
        **label_counts(table),
        "skipped": list(index.skipped),
    }
    if "split" in table.columns:
        summary["splits"] = {split: label_counts(rows) for split, rows in table.groupby("split", sort=True)}
    for column in BREAKDOWNS:
        if column != "split" and column in table.columns:
            summary[f"by_{column}"] = _breakdown(table, column)
    summary["found"] = index.found
    return summary


def _breakdown(table: pd.DataFrame, column: str) -> dict[str, dict[str, int]]:
    values = table[column].fillna("").astype(str).replace("", "(none)")
    return {
        value: label_counts(rows)
        for value, rows in table.assign(**{column: values}).groupby(column, sort=True)
    }


def verify(source: DatasetFolder, summary: dict[str, Any]) -> dict[str, Any]:
    """Compare ``summary`` with the published counts: ``{"matches", "reference", "differences"}``."""
    published = source.published_counts()
    if published is None:
        return {"matches": None, "reference": "none published for this selection", "differences": []}
    expected, reference = published.parts, published.reference
    actual = {"all": {key: summary[key] for key in ("n", "n_pos", "n_neg")}, **summary.get("splits", {})}
    differences = []
    for part, counts in expected.items():
        for key, value in counts.items():
            found = actual.get(part, {}).get(key, 0)
            if found != value:
                differences.append({"part": part, "count": key, "expected": value, "found": found})
    return {"matches": not differences, "reference": reference, "differences": differences}


def describe(summary: dict[str, Any]) -> list[str]:
    """Human-readable lines of a summary (the JSON object follows them)."""
    lines = [
        f"{summary['dataset']} at {summary['root']}: selected {summary['n']} images "
        f"({summary['n_pos']} pneumonia / {summary['n_neg']} normal), skipped {len(summary['skipped'])}"
    ]
    for key, value in summary["found"].items():
        if value not in ({}, [], None, ""):
            lines.append(f"  found {key}: {value}")
    for name, counts in summary.get("splits", {}).items():
        lines.append(
            f"  split {name}: {counts['n']} ({counts['n_pos']} pneumonia / {counts['n_neg']} normal)"
        )
    for key, value in summary.items():
        if key.startswith("by_"):
            parts = ", ".join(f"{name} {counts['n']}" for name, counts in value.items())
            lines.append(f"  {key[3:]}: {parts}")
    for item in summary["skipped"][:20]:
        lines.append(f"  skipped {item['path']}: {item['reason']}")
    if len(summary["skipped"]) > 20:
        lines.append(f"  ... and {len(summary['skipped']) - 20} more skipped (all in the JSON below)")
    check = summary.get("verify")
    if check is not None:
        if check["matches"] is None:
            lines.append(f"verify: {check['reference']}")
        elif check["matches"]:
            lines.append(f"verify: matches the published counts ({check['reference']})")
        for item in check["differences"]:
            lines.append(
                f"verify: {item['part']} {item['count']} is {item['found']}, published {item['expected']} "
                f"({check['reference']})"
            )
    return lines
