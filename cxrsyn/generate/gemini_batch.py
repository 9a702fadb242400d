"""Gemini batch mode (``client.batches``): submit, poll, collect, with the same store and resume guarantees.

Jobs are recorded in ``out_dir/batch_jobs.json`` (written atomically) right after each submission. A run that
stops at any point resumes: recorded jobs are polled and collected, never submitted again; only requests in
no recorded job are submitted. The one unavoidable window: a crash between Google accepting a job and the
record being written leaves a job this folder does not know about (list and collect it by hand with
``client.batches.list()``). Replies without an image are logged and asked again by the next run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cxrsyn.generate.nano_banana import Counts, _image_of, _short
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png, atomic_write

JOBS_NAME = "batch_jobs.json"
DONE_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def _save(path: Path, jobs: list[dict[str, Any]]) -> None:
    atomic_write(path, json.dumps(jobs, indent=1).encode())


def generate_batch(
    nano: Any, client: Any, config: Any, requests: Sequence[ImageRequest], store: OutputStore
) -> Counts:
    counts = Counts()
    path = store.root / JOBS_NAME
    jobs = _load(path)
    by_id = {request.id: request for request in requests}
    open_ids = {rid for job in jobs if not job.get("collected") for rid in job["request_ids"]}
    to_submit = [request for request in requests if request.id not in open_ids]
    for start in range(0, len(to_submit), max(1, nano.batch_size)):
        chunk = to_submit[start : start + nano.batch_size]
        src = [{"contents": r.prompt, "config": config, "metadata": {"key": r.id}} for r in chunk]
        job = client.batches.create(
            model=nano.model, src=src, config={"display_name": f"cxrsyn-{chunk[0].id}"}
        )
        jobs.append({"name": job.name, "request_ids": [r.id for r in chunk], "submitted": time.time()})
        _save(path, jobs)  # recorded at once: a rerun polls this job instead of paying again
        print(f"batch: submitted {job.name} with {len(chunk)} requests")
    for job in jobs:
        if job.get("collected"):
            continue
        state = _wait(nano, client, job["name"])
        if state.state != "JOB_STATE_SUCCEEDED":
            for rid in job["request_ids"]:
                if rid in by_id:
                    store.log_attempt(by_id[rid], "failed", f"batch job {job['name']} ended {state.state}")
                    counts.failed += 1
        else:
            _collect(state, job, by_id, store, counts)
        job["collected"] = True
        _save(path, jobs)
    return counts


def _wait(nano: Any, client: Any, name: str) -> Any:
    while True:
        job = client.batches.get(name=name)
        state = getattr(job.state, "value", None) or str(job.state)
        if state in DONE_STATES:
            job.state = state
            return job
        time.sleep(nano.batch_poll_s)


def _collect(
    job: Any, record: dict[str, Any], by_id: dict[str, ImageRequest], store: OutputStore, counts: Counts
) -> None:
    responses = (job.dest.inlined_responses if job.dest else None) or []
    for item in responses:
        rid = (item.metadata or {}).get("key")
        request = by_id.get(rid)
        if request is None:
            continue
        if item.error is not None:
            store.log_attempt(request, "failed", f"batch item error: {_short(Exception(item.error))}")
            counts.failed += 1
            continue
        image, why, usage = _image_of(item.response)
        if image is None:
            store.log_attempt(request, "no_image", why)
            counts.no_image += 1
            continue
        try:
            png = as_png(*image)
        except (OSError, ValueError) as error:
            store.log_attempt(request, "no_image", f"reply image is not decodable ({type(error).__name__})")
            counts.no_image += 1
            continue
        store.save(request, png, {**usage, "mime_type": image[1], "batch_job": record["name"]})
        counts.ok += 1
