"""Gemini batch mode: requests go up as a JSONL file, results come back as a JSONL file, matched by key only.

Submitting a chunk of requests: its lines ``{"key": <request id>, "request": <GenerateContentRequest>}`` are
written to ``out_dir/batch_inputs/<stem>.jsonl`` (kept: what was asked, verbatim), uploaded with
``client.files.upload`` and submitted with ``client.batches.create(src=<file name>)`` (``inputConfig.fileName``),
the documented way to match results: Google's inlined batch requests neither echo their ``metadata`` nor keep
their order (python-genai issues #2008, #1909), so cxrsyn never uses them.

Paying once. Every step is recorded in ``out_dir/batch_jobs.json`` (written atomically) as it happens: the
uploaded file under a unique display name, then the job's name. A run that stops at any point resumes:
recorded jobs are polled and collected, never submitted again; a chunk uploaded but not known to have become
a job is looked up by its display name (``client.batches.list``) and adopted if Google has it, else
submitted; only requests in no recorded job are submitted anew. Results are read by ``key`` alone (never by
position, never by inline metadata); a results file that cannot be downloaded leaves the job uncollected
(the next run downloads it again; nothing is asked twice).

What cannot be matched is never paid again automatically. A result line without a key, with a key the job
was not sent, or a second, different line for one key, and a request with no result line at all, make the
job's unanswered requests ``unresolved``: every matched image is kept first, then the run stops with one
line (how many, which job). They may have been paid, so no later run submits them again unless asked to with
``generator.batch_resubmit_unresolved=true`` (after checking the results file). An identical line repeated
is kept once. Replies without an image and per-item errors are matched results: logged, and asked again by
the next run, as online.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cxrsyn.core.fileio import atomic_write
from cxrsyn.generate.base import Counts, RunStopped, is_transport_error, short_error
from cxrsyn.generate.gemini_reply import image_of, reply_dict
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png

JOBS_NAME = "batch_jobs.json"
INPUTS_DIRNAME = "batch_inputs"
DONE_STATES = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
ADOPT_SCAN_LIMIT = 1000  # recent batch jobs looked through for one submitted before a crash


def _load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else []


def _save(path: Path, jobs: list[dict[str, Any]]) -> None:
    atomic_write(path, json.dumps(jobs, indent=1).encode())


def generate_batch(nano: Any, client: Any, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
    counts = Counts()
    path = store.root / JOBS_NAME
    jobs = _load(path)
    pending = {request.id: request for request in requests}  # not kept yet; an id leaves when it is saved
    for job in [job for job in jobs if not job.get("name")]:  # a crash during an earlier submission
        _finish_submission(nano, client, job, jobs, path)
    jobs = [job for job in jobs if job.get("name")]
    _save(path, jobs)
    if nano.batch_resubmit_unresolved:
        for job in jobs:
            if job.get("unresolved"):
                job.setdefault("resubmitted", []).extend(job.pop("unresolved"))
    waiting = {
        rid
        for job in jobs
        for rid in (job.get("unresolved", []) if job.get("collected") else job["request_ids"])
    }
    to_submit = [request for request in requests if request.id not in waiting]
    for start in range(0, len(to_submit), max(1, nano.batch_size)):
        _submit(nano, client, to_submit[start : start + nano.batch_size], store, jobs, path)
    stopped: list[str] = []
    for job in jobs:
        if job.get("collected"):
            continue
        state = _wait(nano, client, job["name"])
        try:
            stop = _collect(client, state, job, pending, store, counts)
        except _ResultsUnavailable as error:
            print(f"batch: {error}; the job stays uncollected and is read again by the next run")
            continue
        _save(path, jobs)
        if stop:
            stopped.append(stop)
    _save(path, jobs)
    unresolved = {rid: job["name"] for job in jobs for rid in job.get("unresolved", []) if rid in pending}
    if stopped and not unresolved:
        raise RunStopped(
            f"batch: {'; '.join(stopped)}; every request was answered and its first answer kept: compare the "
            "extra line(s) in the results file by hand; nothing is asked again",
            counts,
        )
    if unresolved:
        names = ", ".join(sorted(set(unresolved.values())))
        raise RunStopped(
            f"batch: {'; '.join(stopped) or f'results of {names} could not all be matched to their requests'}; "
            f"{len(unresolved)} request(s) of {names} stay unresolved: they may have been paid, so they are not "
            "submitted again automatically (attempts.jsonl and batch_jobs.json list them); check the job's "
            "results, then rerun with generator.batch_resubmit_unresolved=true to ask for them again",
            counts,
        )
    return counts


# ------------------------------------------------------------------------------------------ submitting
def request_lines(nano: Any, chunk: Sequence[ImageRequest]) -> bytes:
    """The JSONL input file of a batch job: one ``{"key", "request"}`` line per request."""
    config = nano.generation_config()
    lines = [
        json.dumps(
            {
                "key": request.id,
                "request": {
                    "contents": [{"role": "user", "parts": [{"text": request.prompt}]}],
                    "generationConfig": config,
                },
            },
            sort_keys=True,
        )
        for request in chunk
    ]
    return ("\n".join(lines) + "\n").encode()


def _submit(
    nano: Any,
    client: Any,
    chunk: Sequence[ImageRequest],
    store: OutputStore,
    jobs: list[dict[str, Any]],
    path: Path,
) -> None:
    from google.genai import errors

    stem = f"{chunk[0].id}-{uuid.uuid4().hex[:8]}"
    local = store.root / INPUTS_DIRNAME / f"{stem}.jsonl"
    local.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(local, request_lines(nano, chunk))
    job: dict[str, Any] = {
        "display_name": f"cxrsyn-{stem}",
        "input": f"{INPUTS_DIRNAME}/{local.name}",
        "request_ids": [request.id for request in chunk],
    }
    try:
        uploaded = client.files.upload(
            file=str(local), config={"display_name": job["display_name"], "mime_type": "jsonl"}
        )
    except errors.APIError as error:
        raise nano.refusal(error) from None
    job["file"] = uploaded.name
    jobs.append(job)
    _save(path, jobs)  # from here a crash is recovered by the display name, never by submitting blind
    _create(nano, client, job)
    _save(path, jobs)  # recorded at once: a rerun polls this job instead of paying again
    print(f"batch: submitted {job['name']} with {len(chunk)} requests ({job['input']})")


def _create(nano: Any, client: Any, job: dict[str, Any]) -> None:
    from google.genai import errors

    try:
        created = client.batches.create(
            model=nano.model, src=job["file"], config={"display_name": job["display_name"]}
        )
    except errors.APIError as error:
        raise nano.refusal(error) from None
    job["name"] = created.name
    job["submitted"] = time.time()


def _finish_submission(nano: Any, client: Any, job: dict[str, Any], jobs: list, path: Path) -> None:
    """A chunk recorded as uploaded but not as a job: adopt the job if Google has it (found by its display
    name), else submit the uploaded file now. Nothing uploaded: nothing was sent, the requests are submitted
    afresh."""
    from google.genai import errors

    if not job.get("file"):
        return
    try:
        for number, listed in enumerate(client.batches.list(config={"page_size": 100})):
            if number >= ADOPT_SCAN_LIMIT:
                break
            if getattr(listed, "display_name", None) == job["display_name"]:
                job["name"] = listed.name
                job["submitted"] = time.time()
                print(
                    f"batch: {listed.name} was submitted before the last run stopped: polling it, not submitting again"
                )
                _save(path, jobs)
                return
    except errors.APIError as error:
        raise nano.refusal(error) from None
    _create(nano, client, job)
    _save(path, jobs)
    print(f"batch: submitted {job['name']} from {job['file']}, uploaded before the last run stopped")


def _wait(nano: Any, client: Any, name: str) -> Any:
    while True:
        job = client.batches.get(name=name)
        state = getattr(job.state, "value", None) or str(job.state)
        if state in DONE_STATES:
            job.state = state
            return job
        time.sleep(nano.batch_poll_s)


# ------------------------------------------------------------------------------------------ collecting
class _ResultsUnavailable(Exception):
    pass


def _results(client: Any, job: Any) -> Iterator[tuple[str | None, dict[str, Any] | None, Any, str]]:
    """(key, reply in the wire format or None, error or None, the line as canonical JSON) for every result of
    a finished job. Inlined results carry no usable key (Google drops their metadata): key None."""
    from google.genai import errors

    dest = job.dest
    if dest is not None and dest.inlined_responses:
        for item in dest.inlined_responses:
            reply = reply_dict(item.response) if item.response is not None else None
            yield None, reply, item.error, json.dumps(reply, sort_keys=True)
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
        key = item.get("key") if isinstance(item, dict) else None
        yield (
            key if isinstance(key, str) else None,
            item.get("response"),
            item.get("error"),
            json.dumps(item, sort_keys=True),
        )


def _collect(
    client: Any,
    state: Any,
    record: dict[str, Any],
    pending: dict[str, ImageRequest],
    store: OutputStore,
    counts: Counts,
) -> str | None:
    """Keep every image of a finished job whose line names a request of the job by key; returns the stop
    line when results and requests could not all be matched (``record`` then lists the unresolved ids)."""
    sent = set(record["request_ids"])
    seen: dict[str, str] = {}
    unmatched = duplicates = 0
    for key, reply, error, line in _results(client, state):
        if key is None or key not in sent:
            unmatched += 1
            continue
        if key in seen:
            if seen[key] == line:
                duplicates += 1
            else:
                unmatched += 1  # two different answers for one key: which one is its image is unknown
            continue
        seen[key] = line
        request = pending.get(key)
        if request is None:  # kept already
            continue
        if error is not None:
            store.log_attempt(request, "failed", f"batch item error: {short_error(Exception(error))}")
            counts.failed += 1
            continue
        image, why, columns = image_of(reply or {})
        counts.bill(columns)
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
        store.save(request, png, {**columns, "mime_type": image[1], "batch_job": record["name"]})
        del pending[key]
        counts.ok += 1
    name = record["name"]
    if duplicates:
        print(f"batch: {name} repeated {duplicates} identical result line(s); each image was kept once")
    missing = [rid for rid in record["request_ids"] if rid not in seen]
    record["collected"] = True
    if state.state != "JOB_STATE_SUCCEEDED" and not unmatched:
        for rid in missing:  # the job ended without answering these: nothing was billed for them
            if rid in pending:
                store.log_attempt(pending[rid], "failed", f"batch job {name} ended {state.state}")
                counts.failed += 1
        return None
    if not (unmatched or missing):
        return None
    record["unresolved"] = [rid for rid in missing if rid in pending]
    record["unmatched_results"] = unmatched
    for rid in record["unresolved"]:
        store.log_attempt(
            pending[rid], "unresolved", f"batch job {name} returned no result matched to this key", job=name
        )
    results = getattr(state.dest, "file_name", None) or "inlined results"
    return (
        f"{name} ({results}) returned {unmatched} result line(s) that match no request it was sent (no key, "
        f"an unknown key, or a second different answer for one key) and {len(missing)} request(s) without a "
        "result"
    )
