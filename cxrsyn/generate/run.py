"""One generation run from a composed config: requests from the grid, what is already kept, the rest made.

Before any request: the folder's settings are checked (a folder is one generation), the folder is locked
(one writer), the cost estimate is printed, a paid run without a price stops, and the generator checks what
it needs (a key, credentials). ``dry_run=true`` stops after the estimate, as one JSON line. After the run,
``generation.json`` records the counts and what the replies billed (``spend_this_run``), also when the run
stopped early (``status: stopped``, with the reason).
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxrsyn.core.compose import instantiate_node
from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.fileio import write_json
from cxrsyn.core.runfolder import exclusive
from cxrsyn.core.secrets import redact
from cxrsyn.generate.base import Counts, RunStopped
from cxrsyn.generate.cost import estimate_cost, missing_price_note, price_refusal, spend
from cxrsyn.generate.generator import Generator, as_generator
from cxrsyn.generate.prompts import ImageRequest, PromptGrid
from cxrsyn.generate.store import (
    RECORDS_DIRNAME,
    SUMMARY_NAME,
    OutputStore,
    check_settings,
    settings_fingerprint,
)


def generate(cfg: DictConfig) -> dict[str, Any]:
    generator = as_generator(
        instantiate_node(cfg, "generator", _convert_="object"), str(cfg.generator.get("_target_"))
    )
    grid_settings = grid_of(cfg, generator)
    template = grid_template(grid_settings, generator)
    grid = PromptGrid(**{key: value for key, value in grid_settings.items() if key != GRID_TEMPLATES})
    requests = grid.requests(generator.n_per_class, int(cfg.seed), template)
    if unused := unused_attributes(template, grid_settings["attributes"]):
        print(
            f"generate: grid attributes not in the prompt (recorded per image, not asked for): {', '.join(unused)}"
        )
    out_dir = Path(cfg.out_dir)
    settings = image_settings(generator, int(cfg.seed), grid_settings)
    prices = OmegaConf.to_container(cfg.prices, resolve=True) if cfg.get("prices") else None
    if cfg.get("dry_run"):
        check_settings(out_dir, settings)
        return dry_run(requests, generator, out_dir, prices)
    with exclusive(out_dir, "cxrsyn.generate"):
        check_settings(out_dir, settings)
        return _generate_locked(cfg, generator, requests, out_dir, settings, prices)


def grid_of(cfg: DictConfig, generator: Generator) -> dict[str, Any]:
    """The prompt grid of ``cfg.grid`` with the generator's own attributes (``generator.grid_attributes``,
    e.g. RoentGen-v2's race) added, or replacing the values of an attribute of the same name."""
    grid = OmegaConf.to_container(cfg.grid, resolve=True)
    extra = {name: list(values) for name, values in dict(generator.grid_attributes or {}).items()}
    grid["attributes"] = {**grid.get("attributes", {}), **extra}
    return grid


GRID_TEMPLATES = "prompt_template"  # grid.prompt_template.<generator name>: the grid's own wording


def grid_template(grid: dict[str, Any], generator: Generator) -> str:
    """The prompt template: the grid's wording for this generator (``grid.prompt_template.<name>``, e.g. the
    paediatric grid's for Nano Banana) when it has one, else the generator's ``prompt_template``."""
    return (grid.get(GRID_TEMPLATES) or {}).get(generator.name) or generator.prompt_template


def unused_attributes(template: str, attributes: dict[str, Any]) -> list[str]:
    """Grid attributes the prompt template never names (``age_band`` counts as named by ``{age}``)."""
    named = {field for _, field, _, _ in string.Formatter().parse(template) if field}
    if "age" in named:
        named.add("age_band")
    return [name for name in attributes if name not in named]


def image_settings(generator: Generator, seed: int, grid: dict[str, Any]) -> dict[str, Any]:
    """Every setting that changes the images, flat, keyed by its config path (``generator.model``, ``seed``,
    ``grid.attributes.sex``, ...): what ``generation.json`` records and a rerun must match."""
    settings: dict[str, Any] = {"generator": generator.name, "seed": seed}
    settings.update({f"generator.{key}": value for key, value in generator.image_settings().items()})

    def flatten(value: Any, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                flatten(item, f"{key}.{name}")
        else:
            settings[key] = value

    flatten(grid, "grid")
    return settings


def _generate_locked(
    cfg: DictConfig,
    generator: Generator,
    requests: list[ImageRequest],
    out_dir: Path,
    settings: dict[str, Any],
    prices: dict[str, Any] | None,
) -> dict[str, Any]:
    fingerprint = settings_fingerprint(settings)
    store = OutputStore(out_dir, generator.name, generator.model, fingerprint=fingerprint)
    kept = store.kept()
    wanted = {request.id: request for request in requests}
    for request_id, record in kept.items():
        request = wanted.get(request_id)
        if request is not None and record["prompt"] != request.prompt:
            raise CxrsynError(
                f"{out_dir} holds {request_id} made from a different prompt ({record['prompt']!r}); the grid, seed or "
                "template changed: use a new out_dir, or restore the settings to resume"
            )
    pending = [request for request in requests if request.id not in kept]
    print(
        f"generate: {len(requests)} images requested ({generator.n_per_class} per class), {len(requests) - len(pending)} "
        f"already in {out_dir}, {len(pending)} to make; paid calls: {generator.paid_calls(len(pending))}"
    )
    billing = generator.billing()
    estimate = estimate_cost(billing, generator.model, [request.prompt for request in pending], prices)
    print(f"generate: cost estimate {json.dumps(estimate)}")
    if refusal := price_refusal(estimate):
        raise CxrsynError(refusal)
    if pending:
        generator.check_ready()  # e.g. the API key: stop before anything is written
    summary: dict[str, Any] = {
        "out_dir": str(out_dir),
        "generator": generator.name,
        "model": generator.model,
        "fingerprint": fingerprint,
        "settings": settings,
        "config": redact(
            OmegaConf.to_container(
                OmegaConf.masked_copy(cfg, ["generator", "grid", "seed", "out_dir"]), resolve=True
            )
        ),
    }
    write_json(out_dir / SUMMARY_NAME, {**summary, "status": "running"})  # the settings, before any request
    stopped: CxrsynError | None = None
    counts = Counts()
    try:
        if pending:
            counts = generator.generate(pending, store)
    except OSError as error:  # the store could not write: nothing more was asked for after it
        raise CxrsynError(
            f"cannot write into {out_dir} ({error.strerror or error}: {error.filename or ''}); the run stopped "
            "sending requests; free space or fix permissions, then rerun the same command (kept images are "
            "never asked for twice)"
        ) from None
    except RunStopped as error:  # no quota, a refusal, unmatched batch results: say what was done, then stop
        stopped, counts = error, error.counts
    except CxrsynError as error:  # stopped before its first reply (a refusal at submission, say)
        stopped = error
    kept = store.kept()
    manifest = store.write_manifest(kept.values()) if kept else "no manifest yet"
    missing = sorted(set(wanted) - set(kept))
    summary.update(
        {
            "status": "stopped" if stopped else "complete" if not missing else "incomplete",
            "requested": len(requests),
            "kept": len(kept),
            "made_this_run": counts.ok,
            "retried": counts.retried,
            "no_image_replies": counts.no_image,
            "failed_this_run": counts.failed,
            "missing": missing,
            "estimate_this_run": estimate,
            "spend_this_run": spend(billing, counts.ok, counts.billed, prices),
        }
    )
    if stopped:
        summary["stopped_because"] = str(stopped)
    write_json(out_dir / SUMMARY_NAME, summary)
    print(
        f"generate: kept {len(kept)} of {len(requests)} in {manifest}; this run made {summary['made_this_run']}, "
        f"retried {summary['retried']}, no-image replies {summary['no_image_replies']}, failed {summary['failed_this_run']}"
    )
    if summary["spend_this_run"] is not None and billing is not None:
        bill = summary["spend_this_run"]
        print(
            f"generate: spent about ${bill['total_usd']} this run ({bill['images']} images, {bill['thoughts_tokens']} "
            f"thinking tokens, {bill['prompt_tokens']} prompt tokens, {bill['thought_images']} draft images; prices "
            f"of {bill['prices_as_of']})"
        )
    if stopped:
        raise stopped
    if missing:
        raise CxrsynError(
            f"{len(missing)} image(s) still missing (e.g. {missing[0]}; reasons in {out_dir}/attempts.jsonl); "
            "rerun the same command to ask for them again (kept images are never asked for twice)"
        )
    return summary


def dry_run(
    requests: list[ImageRequest], generator: Generator, out_dir: Path, prices: dict[str, Any] | None
) -> dict[str, Any]:
    """Print the prompts still to make and the paid-call count, then the cost estimate as the last line (one
    JSON object). Sends nothing, needs no key, takes no lock and changes nothing in ``out_dir``."""
    has_records = (out_dir / RECORDS_DIRNAME).is_dir()
    kept = OutputStore(out_dir, generator.name, generator.model).kept(repair=False) if has_records else {}
    pending = [request for request in requests if request.id not in kept]
    for request in pending:
        print(f"{request.id}\t{request.prompt}")
    print(
        f"dry run: {len(requests)} images requested, {len(kept)} already in {out_dir}, {len(pending)} to make; "
        f"paid calls: {generator.paid_calls(len(pending))}"
    )
    estimate = estimate_cost(generator.billing(), generator.model, [r.prompt for r in pending], prices)
    if note := missing_price_note(estimate):
        print(f"dry run: {note}")
    print(json.dumps(estimate))
    return {
        "requested": len(requests),
        "kept": len(kept),
        "pending": len(pending),
        "dry_run": True,
        **estimate,
    }
