"""A local HTTP server that speaks Gemini's wire format as hostilely as the real service, and injects faults.

For tests, benchmarks and offline demos of ``generator=nano_banana`` (and its successors) through the real
``google-genai`` client (``generator.base_url=<server.url>``). It serves ``generateContent`` on the Gemini API
path (``/v1beta/models/<id>:generateContent``, API key in ``x-goog-api-key``) and on Vertex AI's
(``/v1beta1/projects/<p>/locations/<l>/publishers/google/models/<id>:generateContent``, an OAuth bearer token),
the resumable file upload (``/upload/v1beta/files``), batch jobs (create, get, list), results-file downloads,
and an OAuth token endpoint (``/token``): ``adc_file(folder)`` writes a made-up service-account key whose
``token_uri`` is this server, so ``GOOGLE_APPLICATION_CREDENTIALS=<that file>`` gives real application-default
credentials that never reach Google (the token is ``ACCESS_TOKEN``).

Behaviours. Each ``generateContent`` request, and each item of a batch job, takes the next behaviour from
``script`` (then ``ok``):

``ok``           200 with one image (unique per served image) and usage metadata
``403``/``429``/``500``/``503``   an error in Google's JSON error format; with ``retry_delay`` set (e.g.
                 ``"0.2s"``), 429 and 503 carry a ``google.rpc.RetryInfo`` detail asking for that wait
``429-no-quota`` 429 RESOURCE_EXHAUSTED whose ``google.rpc.QuotaFailure`` has limit 0 (``quotaValue: "0"``,
                 message "... limit: 0 ...") and a RetryInfo of ``retry_delay`` or ``"38s"``: a key without
                 billing asking an image model (no free tier)
``500-html``     a 500 whose body is not JSON
``slow``         sleeps ``slow_s`` (longer than the client's timeout), then answers ok
``no-image``     200 whose candidate has ``finishReason: NO_IMAGE`` and text only
``safety``       200 with ``finishReason: IMAGE_SAFETY`` and no parts
``blocked``      200 with ``promptFeedback.blockReason: PROHIBITED_CONTENT`` and no candidates
``drafts-only``  200 whose parts are thought (draft) images only, no final image
``missing``      batch only: the item is generated (and paid) but its result line is dropped
``duplicate``    batch only: the item's result line appears twice, verbatim
``unkeyed``      batch only: the item's result line has no ``key``

Thinking. Models whose id starts with one of ``thinking_models`` (default: Gemini 3) think, as the real
ones do: an ok reply carries ``thought_images`` interim images in parts marked ``"thought": true`` (with a
``thoughtSignature``) BEFORE the final image part (which carries a signature too, and no ``thought``), and
``usageMetadata`` reports ``thoughtsTokenCount`` (``thoughts_tokens``) beside ``promptTokenCount`` and the
image tokens (``candidatesTokensDetails``). With ``return_thoughts=False`` the drafts are left out of the
reply and only the token count says the model thought (the API may answer either way without
``include_thoughts``). Drafts are counted in ``drafts_served``, never in ``images_served``.

Batch mode, as Google's backend behaves (python-genai #2008, #1909). A job made from an uploaded JSONL file
(``inputConfig.fileName``; lines ``{"key", "request"}``) answers with a results file (``responsesFile``) of
lines ``{"key", "response"}`` or ``{"key", "error"}``, served by ``GET files/<id>:download``. A job made from
inlined requests answers inlined, WITHOUT the requests' ``metadata`` (unless ``echo_inline_metadata``).
Results come in shuffled order (``shuffle_results``, seeded). ``GET batches/<id>`` answers RUNNING for
``batch_polls`` polls, then SUCCEEDED; ``GET batches`` lists every job, newest first, with its display name.
The first ``download_failures`` downloads answer 503.

A model in ``unknown_models`` answers 404 NOT_FOUND (as a retired model does), for ``generateContent`` and
batch creation alike. Every reply names ``modelVersion`` ``<model>-<version_tag>``; ``watermark_fields`` (a
dict) is merged into every candidate that carries an image.

What a test can read afterwards: ``served`` (behaviour -> replies), ``images_served`` and ``drafts_served``,
``paid`` (prompt -> final images generated for it, online or in a batch, dropped lines included: what a
bill would count), ``served_images`` (prompt -> sha256 of each final image generated for it),
``requests`` (one entry per HTTP request: ``time`` (monotonic), ``method``, ``path``, ``kind``),
``paths``, ``api_keys``, ``bearer_tokens``, ``uploads`` (file name -> bytes), ``batch_jobs``,
``downloads`` and ``token_requests``.

``echo_key=True`` makes every error of ``generateContent`` quote the key the request carried, as a careless
server or proxy might: a test that no key reaches a file or the screen through an error message.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

BEHAVIOURS = (
    "ok",
    "403",
    "429",
    "429-no-quota",
    "500",
    "503",
    "500-html",
    "slow",
    "no-image",
    "safety",
    "blocked",
    "drafts-only",
    "missing",
    "duplicate",
    "unkeyed",
)
BATCH_ONLY = ("missing", "duplicate", "unkeyed")
_STATUS = {
    "403": "PERMISSION_DENIED",
    "429": "RESOURCE_EXHAUSTED",
    "429-no-quota": "RESOURCE_EXHAUSTED",
    "500": "INTERNAL",
    "503": "UNAVAILABLE",
}
ACCESS_TOKEN = "ya29.fake-access-token-not-a-secret"


class FakeGemini:
    def __init__(
        self,
        script: Iterable[str] = (),
        latency_s: float = 0.0,
        slow_s: float = 3.0,
        image_size: int = 64,
        batch_polls: int = 1,
        unknown_models: Iterable[str] = (),
        version_tag: str = "fake-001",
        watermark_fields: dict | None = None,
        download_failures: int = 0,
        retry_delay: str | None = None,
        thinking_models: Iterable[str] = ("gemini-3",),
        thought_images: int = 2,
        thoughts_tokens: int = 480,
        return_thoughts: bool = True,
        echo_inline_metadata: bool = False,
        shuffle_results: bool = True,
        echo_key: bool = False,
    ):
        script = list(script)
        unknown = set(script) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; use {BEHAVIOURS}")
        self.script = deque(script)
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.image_size = image_size
        self.batch_polls = batch_polls
        self.unknown_models = set(unknown_models)
        self.version_tag = version_tag
        self.watermark_fields = dict(watermark_fields or {})
        self.download_failures = download_failures
        self.retry_delay = retry_delay
        self.thinking_models = tuple(thinking_models)
        self.thought_images = thought_images
        self.thoughts_tokens = thoughts_tokens
        self.return_thoughts = return_thoughts
        self.echo_inline_metadata = echo_inline_metadata
        self.shuffle_results = shuffle_results
        self.echo_key = echo_key
        self._random = random.Random(0)
        self.served: Counter[str] = Counter()  # behaviour -> replies sent
        self.images_served = 0
        self.drafts_served = 0
        self._pngs = 0
        self.paid: Counter[str] = Counter()
        self.served_images: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.paths: Counter[str] = Counter()
        self.api_keys: set[str] = set()
        self.bearer_tokens: set[str] = set()
        self.uploads: dict[str, bytes] = {}
        self._upload_sessions: dict[str, dict] = {}
        self.files: dict[str, bytes] = {}  # results files, by name
        self.downloads = 0
        self.token_requests = 0
        self.batch_jobs: dict[str, dict] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---------------------------------------------------------------------------------------------- life
    def __enter__(self) -> FakeGemini:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None, "use the server in a with block"
        return f"http://127.0.0.1:{self._server.server_port}"

    def adc_file(self, folder) -> str:  # noqa: ANN001 - a path
        """An application-default credentials file (a service-account key made up on the spot, with a fresh
        RSA key) whose token endpoint is this server: point ``GOOGLE_APPLICATION_CREDENTIALS`` at it and
        google-auth signs its token request and fetches the token here, not from Google. (An
        ``authorized_user`` file would not do: google-auth always sends those to Google's endpoint.)"""
        from pathlib import Path

        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "fake-adc-project",
            "private_key_id": "fake-key-id",
            "private_key": pem,
            "client_email": "cxrsyn-test@fake-adc-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{self.url}/token",
        }
        path = Path(folder) / "adc.json"
        path.write_text(json.dumps(info))
        return str(path)

    # ------------------------------------------------------------------------------------------- replies
    def next_behaviour(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else "ok"

    def thinks(self, model: str) -> bool:
        return model.startswith(self.thinking_models) if self.thinking_models else False

    def image_png(self, prompt: str | None, draft: bool = False) -> bytes:
        """A unique random PNG; a final image is counted as served and paid for ``prompt``."""
        with self._lock:
            self.images_served += not draft
            self.drafts_served += draft
            self._pngs += 1
            number = self._pngs
        rng = np.random.default_rng(number)
        pixels = rng.integers(0, 256, (self.image_size, self.image_size), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        data = buffer.getvalue()
        if not draft:
            with self._lock:
                key = prompt or ""
                self.paid[key] += 1
                self.served_images.setdefault(key, []).append(hashlib.sha256(data).hexdigest())
        return data

    def reply(self, behaviour: str, model: str, prompt: str | None) -> dict:
        """A ``GenerateContentResponse`` for an answering behaviour."""
        thinking = self.thinks(model)
        prompt_tokens = max(1, len(prompt or "") // 4)
        usage: dict = {"promptTokenCount": prompt_tokens}
        signature = base64.b64encode(b"fake-thought-signature").decode()
        if behaviour == "no-image":
            parts = [{"text": "I can describe a chest X-ray instead."}]
            reply: dict = {
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "NO_IMAGE"}]
            }
            usage["candidatesTokenCount"] = 12
        elif behaviour == "safety":
            reply = {"candidates": [{"finishReason": "IMAGE_SAFETY"}]}
        elif behaviour == "blocked":
            reply = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        else:
            parts = []
            drafts = self.thought_images if thinking and self.return_thoughts else 0
            if behaviour == "drafts-only":
                drafts = max(1, self.thought_images)
            for _ in range(drafts):
                data = base64.b64encode(self.image_png(prompt, draft=True)).decode()
                draft = {"inlineData": {"mimeType": "image/png", "data": data}}
                parts.append({**draft, "thought": True, "thoughtSignature": signature})
            if behaviour != "drafts-only":
                data = base64.b64encode(self.image_png(prompt)).decode()
                final: dict = {"inlineData": {"mimeType": "image/png", "data": data}}
                if thinking:
                    final["thoughtSignature"] = signature  # the final part is signed too; it is no thought
                parts.append(final)
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
            reply = {"candidates": [{**candidate, **self.watermark_fields}]}
            image_tokens = 1120 if behaviour != "drafts-only" else 0
            usage["candidatesTokenCount"] = image_tokens
            usage["candidatesTokensDetails"] = [{"modality": "IMAGE", "tokenCount": image_tokens}]
        if thinking and behaviour not in ("blocked",):
            usage["thoughtsTokenCount"] = self.thoughts_tokens
        usage["totalTokenCount"] = sum(
            usage.get(k, 0) for k in ("promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount")
        )
        return {**reply, "usageMetadata": usage, "modelVersion": f"{model}-{self.version_tag}"}

    def error(self, behaviour: str) -> dict:
        code = int(behaviour.split("-")[0])
        body: dict = {"code": code, "status": _STATUS[behaviour], "message": f"injected {behaviour}"}
        details = []
        if behaviour == "429-no-quota":
            body["message"] = (
                "You exceeded your current quota, please check your plan and billing details. Quota exceeded "
                "for metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 0"
            )
            violation = {
                "quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global"},
                "quotaValue": "0",
            }
            details.append(
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}
            )
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": self.retry_delay or "38s"}
            )
        elif behaviour in ("429", "503") and self.retry_delay:
            details.append(
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": self.retry_delay}
            )
        if details:
            body["details"] = details
        return {"error": body}


def _model_of(path: str) -> str:
    """The model id in ``.../models/<id>:method`` ("" when the path names none)."""
    tail = path.split("?")[0].rsplit("models/", 1)
    return tail[1].split(":", 1)[0] if len(tail) == 2 else ""


def _prompt_of(request: dict) -> str | None:
    for content in request.get("contents") or []:
        for part in content.get("parts") or []:
            if "text" in part:
                return part["text"]
    return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGemini
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _record(self, kind: str) -> None:
        fake = self.fake
        with fake._lock:
            fake.requests.append(
                {
                    "time": time.monotonic(),
                    "method": self.command,
                    "path": self.path.split("?")[0],
                    "kind": kind,
                }
            )
            fake.paths[self.path.split("?")[0]] += 1
            if self.headers.get("x-goog-api-key"):
                fake.api_keys.add(self.headers["x-goog-api-key"])
            auth = self.headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                fake.bearer_tokens.add(auth[7:])

    # ---------------------------------------------------------------------------------------------- POST
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.fake
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        path = self.path.split("?")[0]
        if path == "/token":
            self._record("token")
            with fake._lock:
                fake.token_requests += 1
            return self._send(200, {"access_token": ACCESS_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
        if path.startswith("/upload/"):
            self._record("upload")
            return self._upload(body)
        model = _model_of(self.path)
        if model in fake.unknown_models:
            self._record("unknown-model")
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for this method."
            )
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": message}})
        if path.endswith(":batchGenerateContent"):
            self._record("batch-create")
            return self._create_batch(json.loads(body or b"{}"), model)
        if not path.endswith(":generateContent"):
            self._record("unknown")
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": self.path}})
        self._record("generate")
        prompt = _prompt_of(json.loads(body or b"{}"))
        behaviour = fake.next_behaviour()
        behaviour = "ok" if behaviour in BATCH_ONLY else behaviour
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if behaviour == "slow":
            time.sleep(fake.slow_s)
            behaviour = "ok"
        self._count(behaviour)
        if behaviour in _STATUS:
            payload = fake.error(behaviour)
            if fake.echo_key:
                payload["error"]["message"] += f" for API key {self.headers.get('x-goog-api-key')}"
            return self._send(int(behaviour.split("-")[0]), payload)
        if behaviour == "500-html":
            return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        return self._send(200, fake.reply(behaviour, model, prompt))

    def _upload(self, body: bytes) -> None:
        """Google's resumable upload: ``start`` opens a session (its URL in ``x-goog-upload-url``), ``upload,
        finalize`` stores the bytes and answers the file."""
        fake = self.fake
        command = (self.headers.get("x-goog-upload-command") or "").lower()
        if "start" in command:
            with fake._lock:
                session = f"s{len(fake._upload_sessions) + 1}"
                meta = json.loads(body or b"{}").get("file", {})
                fake._upload_sessions[session] = {"meta": meta, "data": b""}
            headers = {"x-goog-upload-url": f"{fake.url}/upload/v1beta/files?upload_id={session}"}
            return self._send(200, {}, headers=headers)
        session = parse_qs(urlparse(self.path).query).get("upload_id", [""])[0]
        with fake._lock:
            state = fake._upload_sessions.get(session)
            if state is None:
                return self._send(
                    404, {"error": {"code": 404, "status": "NOT_FOUND", "message": "no session"}}
                )
            state["data"] += body
            if "finalize" not in command:
                return self._send(200, {}, headers={"x-goog-upload-status": "active"})
            name = f"files/upload-{len(fake.uploads) + 1}"
            fake.uploads[name] = state["data"]
        file = {
            "name": name,
            "displayName": state["meta"].get("displayName", ""),
            "mimeType": state["meta"].get("mimeType", "application/octet-stream"),
            "sizeBytes": str(len(state["data"])),
            "state": "ACTIVE",
            "uri": f"{fake.url}/v1beta/{name}",
        }
        return self._send(200, {"file": file}, headers={"x-goog-upload-status": "final"})

    # ------------------------------------------------------------------------------------------ batches
    def _create_batch(self, body: dict, model: str) -> None:
        fake = self.fake
        batch = body.get("batch", {})
        config = batch.get("inputConfig", {})
        if config.get("fileName"):
            data = fake.uploads.get(config["fileName"])
            if data is None:
                message = f"{config['fileName']} does not exist"
                return self._send(
                    400, {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": message}}
                )
            lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
            items = [(line.get("key"), _prompt_of(line.get("request", {}))) for line in lines]
            source = "file"
        else:
            requests = config.get("requests", {}).get("requests", [])
            items = [
                ((item.get("metadata") or {}).get("key"), _prompt_of(item.get("request", item)))
                for item in requests
            ]
            source = "inline"
        with fake._lock:
            name = f"batches/fake-{len(fake.batch_jobs) + 1}"
            fake.batch_jobs[name] = {
                "items": items,
                "keys": [key for key, _ in items],
                "source": source,
                "display_name": batch.get("displayName", ""),
                "polls_left": fake.batch_polls,
                "output": None,
                "model": model,
            }
        return self._send(200, self._operation(name, "BATCH_STATE_PENDING"))

    def _operation(self, name: str, state: str, output: dict | None = None) -> dict:
        job = self.fake.batch_jobs[name]
        metadata = {
            "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
            "name": name,
            "displayName": job["display_name"],
            "model": f"models/{job['model']}",
            "state": state,
        }
        if output is not None:
            metadata["output"] = output
        return {"name": name, "metadata": metadata, **({"done": True} if output is not None else {})}

    def _finish(self, name: str) -> dict:
        """Run a job's items once: each takes the next behaviour; results shuffled, lines dropped or doubled."""
        fake = self.fake
        job = fake.batch_jobs[name]
        lines: list[dict] = []
        for key, prompt in job["items"]:
            behaviour = fake.next_behaviour()
            behaviour = "ok" if behaviour in ("slow", "500-html") else behaviour
            self._count(behaviour)
            if behaviour in _STATUS:
                line = {"key": key, "error": fake.error(behaviour)["error"]}
            else:
                answer = "ok" if behaviour in BATCH_ONLY else behaviour
                line = {"key": key, "response": fake.reply(answer, job["model"], prompt)}
            if behaviour == "missing":
                continue
            if behaviour == "unkeyed":
                del line["key"]
            lines.append(line)
            if behaviour == "duplicate":
                lines.append(line)
        if fake.shuffle_results:
            with fake._lock:
                fake._random.shuffle(lines)
        if job["source"] == "file":
            file_name = f"files/{name.removeprefix('batches/')}-results"
            text = "".join(json.dumps(line) + "\n" for line in lines)
            with fake._lock:
                fake.files[file_name] = text.encode()
            return {"responsesFile": file_name}
        inlined = []
        for line in lines:
            item = {k: v for k, v in line.items() if k != "key"}
            if fake.echo_inline_metadata and line.get("key") is not None:
                item["metadata"] = {"key": line["key"]}
            inlined.append(item)
        return {"inlinedResponses": {"inlinedResponses": inlined}}

    # ----------------------------------------------------------------------------------------------- GET
    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        path = self.path.split("?")[0]
        if "files/" in path and path.endswith(":download"):
            self._record("download")
            data = fake.files.get("files/" + path.split("files/", 1)[1].removesuffix(":download"))
            if data is None:
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})
            with fake._lock:
                failing = fake.download_failures > 0
                fake.download_failures -= int(failing)
                fake.downloads += int(not failing)
            if failing:
                return self._send(503, fake.error("503"))
            return self._send(200, data, "application/octet-stream")
        if path.rstrip("/").endswith("/batches"):
            self._record("batch-list")
            with fake._lock:
                names = list(fake.batch_jobs)[::-1]
            operations = [self._operation(name, self._state(name, poll=False)) for name in names]
            return self._send(200, {"operations": operations})
        self._record("batch-get")
        name = path[path.find("batches/") :] if "batches/" in path else ""
        if name not in fake.batch_jobs:
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})
        state = self._state(name, poll=True)
        if state != "BATCH_STATE_SUCCEEDED":
            return self._send(200, self._operation(name, state))
        job = fake.batch_jobs[name]
        with fake._lock:
            first = job["output"] is None
            job["output"] = job["output"] or "pending"
        if first:
            job["output"] = self._finish(name)
        while job["output"] == "pending":  # another request is finishing it
            time.sleep(0.01)
        return self._send(200, self._operation(name, state, job["output"]))

    def _state(self, name: str, poll: bool) -> str:
        job = self.fake.batch_jobs[name]
        with self.fake._lock:
            running = job["polls_left"] > 0
            if poll:
                job["polls_left"] -= 1
        return "BATCH_STATE_RUNNING" if running else "BATCH_STATE_SUCCEEDED"

    # ----------------------------------------------------------------------------------------- plumbing
    def _count(self, behaviour: str) -> None:
        with self.fake._lock:
            self.fake.served[behaviour] += 1

    def _send(
        self,
        status: int,
        payload: dict | bytes,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) or was killed
            pass
