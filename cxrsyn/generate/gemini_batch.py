"""Gemini batch mode (``client.batches``): submit, poll, collect, with the same store and resume guarantees.

Jobs are recorded in ``out_dir/batch_jobs.json`` (written atomically) right after each submission. A run that
stops at any point resumes: recorded jobs are polled and collected, never submitted again; only requests in
no recorded job are submitted. The one unavoidable window: a crash between Google accepting a job and the
record being written leaves a job this folder does not know about (list and collect it by hand with
``client.batches.list()``). Replies without an image are logged and asked again by the next run.

A finished job's results come inlined in the job or as a file (``dest.file_name``, fetched with
``client.files.download``); both are read. The keys that came back are compared with the keys sent: each
missing key is logged (``missing`` in attempts.jsonl) and recorded on the job, which stays uncollected until
every one of its keys is kept; the next run asks again for the missing keys only. A results file that cannot
be downloaded leaves the job uncollected too (the next run downloads it again; nothing is asked twice).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cxrsyn.core.fileio import atomic_write
from cxrsyn.generate.base import Counts, image_of, is_transport_error, reply_dict, short_error
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png

JOBS_NAME = "batch_jobs.json"
DONE_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def _save(path: Path, jobs: list[dict[str, Any]]) -> None:
    atomic_write(path, json.dumps(jobs, indent=1).encode())


def generate_batch(
    nano: Any, client: Any, config: Any, requests: Sequence[ImageRequest], store: OutputStore
) -> Counts:
    from google.genai import errors

    counts = Counts()
    path = store.root / JOBS_NAME
    jobs = _load(path)
    pending = {request.id: request for request in requests}  # not kept yet; an id leaves when it is saved
    waiting = {
        rid
        for job in jobs
        if not job.get("collected")
        for rid in job["request_ids"]
        if rid not in job.get("missing", ())
    }
    to_submit = [request for request in requests if request.id not in waiting]
    for start in range(0, len(to_submit), max(1, nano.batch_size)):
        chunk = to_submit[start : start + nano.batch_size]
        src = [{"contents": r.prompt, "config": config, "metadata": {"key": r.id}} for r in chunk]
        try:
            job = client.batches.create(
                model=nano.model, src=src, config={"display_name": f"cxrsyn-{chunk[0].id}"}
            )
        except errors.APIError as error:
            raise nano.refusal(error) from None
        jobs.append({"name": job.name, "request_ids": [r.id for r in chunk], "submitted": time.time()})
        _save(path, jobs)  # recorded at once: a rerun polls this job instead of paying again
        print(f"batch: submitted {job.name} with {len(chunk)} requests")
    for job in jobs:
        if job.get("collected"):
            continue
        state = _wait(nano, client, job["name"])
        if state.state != "JOB_STATE_SUCCEEDED":
            for rid in job["request_ids"]:
                if rid in pending:
                    store.log_attempt(pending[rid], "failed", f"batch job {job['name']} ended {state.state}")
                    counts.failed += 1
            job["collected"] = True
        else:
            try:
                returned = _collect(client, state, job, pending, store, counts)
            except _ResultsUnavailable as error:
                print(f"batch: {error}; the job stays uncollected and is read again by the next run")
                continue
            missing = [rid for rid in job["request_ids"] if rid in pending and rid not in returned]
            for rid in missing:
                if rid not in job.get("missing", ()):
                    store.log_attempt(
                        pending[rid], "missing", f"batch job {job['name']} returned no result for this key"
                    )
                    counts.failed += 1
            job["missing"] = missing
            job["collected"] = not missing
            if missing:
                print(
                    f"batch: {job['name']} returned no result for {len(missing)} key(s) (e.g. {missing[0]}; "
                    "logged in attempts.jsonl); the next run asks again for those only"
                )
        _save(path, jobs)
    for job in jobs:  # keys missing from one job that a later job delivered
        if not job.get("collected") and "missing" in job:
            job["missing"] = [rid for rid in job["missing"] if rid in pending]
            job["collected"] = not job["missing"]
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


class _ResultsUnavailable(Exception):
    pass


def _results(client: Any, job: Any) -> Iterator[tuple[str | None, dict[str, Any] | None, Any]]:
    """(key, reply in the wire format or None, error or None) for every result of a finished job, inlined
    or in its results file."""
    from google.genai import errors

    dest = job.dest
    if dest is not None and dest.inlined_responses:
        for item in dest.inlined_responses:
            reply = reply_dict(item.response) if item.response is not None else None
            yield (item.metadata or {}).get("key"), reply, item.error
        return
    file_name = getattr(dest, "file_name", None) if dest is not None else None
    if not file_name:
        return
    try:
        data = client.files.download(file=file_name)
    except errors.APIError as error:
        raise _ResultsUnavailable(f"results file {file_name} of {job.name}: {short_error(error)}") from None
    except Exception as error:
        if not is_transport_error(error):
            raise
        raise _ResultsUnavailable(f"results file {file_name} of {job.name}: {type(error).__name__}") from None
    for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise _ResultsUnavailable(f"results file {file_name} line {number} is not JSON") from None
        key = item.get("key") or (item.get("metadata") or {}).get("key")
        yield key, item.get("response"), item.get("error")


def _collect(
    client: Any,
    job: Any,
    record: dict[str, Any],
    pending: dict[str, ImageRequest],
    store: OutputStore,
    counts: Counts,
) -> set[str]:
    """Keep every image of a finished job; returns the keys that came back (with or without an image)."""
    returned: set[str] = set()
    for rid, reply, error in _results(client, job):
        if rid is None:
            continue
        returned.add(rid)
        request = pending.get(rid)
        if request is None:  # kept already (by this job or a later one)
            continue
        if error is not None:
            store.log_attempt(request, "failed", f"batch item error: {short_error(Exception(error))}")
            counts.failed += 1
            continue
        image, why, extra = image_of(reply or {})
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
        store.save(request, png, {**extra, "mime_type": image[1], "batch_job": record["name"]})
        del pending[rid]
        counts.ok += 1
    return returned
