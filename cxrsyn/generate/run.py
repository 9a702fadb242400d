"""One generation run from a composed config: requests from the grid, what is already kept, the rest made."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxrsyn.errors import CxrsynError
from cxrsyn.evaluation.outputs import write_json
from cxrsyn.generate.prompts import PromptGrid
from cxrsyn.generate.store import OutputStore
from cxrsyn.secrets import redact
from cxrsyn.training.run import instantiate_node

SUMMARY_NAME = "generation.json"


def generate(cfg: DictConfig) -> dict[str, Any]:
    generator = instantiate_node(cfg, "generator", _convert_="object")
    grid = PromptGrid(**OmegaConf.to_container(cfg.grid, resolve=True))
    requests = grid.requests(generator.n_per_class, int(cfg.seed), generator.prompt_template)
    out_dir = Path(cfg.out_dir)
    if cfg.get("dry_run"):
        return dry_run(requests, generator, out_dir)
    store = OutputStore(out_dir, generator.name, generator.model)
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
    counts = generator.generate(pending, store) if pending else None
    kept = store.kept()
    manifest = store.write_manifest(kept.values())
    missing = sorted(set(wanted) - set(kept))
    summary = {
        "out_dir": str(out_dir),
        "generator": generator.name,
        "model": generator.model,
        "requested": len(requests),
        "kept": len(kept),
        "made_this_run": counts.ok if counts else 0,
        "retried": counts.retried if counts else 0,
        "no_image_replies": counts.no_image if counts else 0,
        "failed_this_run": counts.failed if counts else 0,
        "missing": missing,
        "config": redact(
            OmegaConf.to_container(
                OmegaConf.masked_copy(cfg, ["generator", "grid", "seed", "out_dir"]), resolve=True
            )
        ),
    }
    write_json(out_dir / SUMMARY_NAME, summary)
    print(
        f"generate: kept {len(kept)} of {len(requests)} in {manifest}; this run made {summary['made_this_run']}, "
        f"retried {summary['retried']}, no-image replies {summary['no_image_replies']}, failed {summary['failed_this_run']}"
    )
    if missing:
        raise CxrsynError(
            f"{len(missing)} image(s) still missing (e.g. {missing[0]}; reasons in {out_dir}/attempts.jsonl); "
            "rerun the same command to ask for them again (kept images are never asked for twice)"
        )
    return summary


def dry_run(requests: list, generator: Any, out_dir: Path) -> dict[str, Any]:
    kept = OutputStore(out_dir, generator.name, generator.model).kept() if out_dir.is_dir() else {}
    pending = [request for request in requests if request.id not in kept]
    for request in pending:
        print(f"{request.id}\t{request.prompt}")
    print(
        f"dry run: {len(requests)} images requested, {len(kept)} already in {out_dir}, {len(pending)} to make; "
        f"paid calls: {generator.paid_calls(len(pending))}"
    )
    return {"requested": len(requests), "kept": len(kept), "pending": len(pending), "dry_run": True}
