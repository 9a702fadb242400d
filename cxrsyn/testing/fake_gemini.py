"""A local HTTP server that speaks the Gemini ``generateContent`` wire format and injects faults.

For tests, benchmarks and offline demos of ``generator=nano_banana`` through the real ``google-genai``
client (``generator.base_url=<server.url>``). Each request takes the next behaviour from ``script`` (then
``ok`` for good):

``ok``           200 with one PNG (unique per served image) and usage metadata
``403``/``429``/``500``/``503``   an error in Google's JSON error format
``500-html``     a 500 whose body is not JSON
``slow``         sleeps ``slow_s`` (longer than the client's timeout), then answers ok
``no-image``     200 whose candidate has ``finishReason: NO_IMAGE`` and text only
``safety``       200 with ``finishReason: IMAGE_SAFETY`` and no parts
``blocked``      200 with ``promptFeedback.blockReason: PROHIBITED_CONTENT`` and no candidates
``missing``      batch only: the item is left out of the job's results (``generateContent`` answers ok)

Every reply names ``modelVersion`` ``<the requested model>-<version_tag>`` (default tag ``fake-001``), so a
test can tell the version the API reported from the id it asked for. ``watermark_fields`` (a dict) is merged
into every candidate that carries an image, as a stand-in for whatever watermark or SynthID fields the API
may expose; the SDK's types drop such fields, the raw reply keeps them. A model in ``unknown_models`` answers
404 NOT_FOUND (as a retired model does), for ``generateContent`` and batch creation alike.

Batch mode: ``:batchGenerateContent`` creates a job whose ``GET batches/<id>`` answers RUNNING for
``batch_polls`` polls, then SUCCEEDED with one response per request (each taking the next behaviour; error
behaviours become per-item errors, ``missing`` drops the item). With ``batch_results="inline"`` (default) the
responses are inlined in the job; with ``"file"`` the job names a results file (``responsesFile``) whose JSON
lines (``{"key": ..., "response": ...}`` or ``{"key": ..., "error": ...}``) ``GET files/<id>:download``
serves, as Google does for large jobs. ``downloads`` counts the results files served; the first
``download_failures`` downloads answer 503 instead.

``echo_key=True`` makes every error message quote the key the request carried, as a careless server or proxy
might: a test that no key reaches a file or the screen through an error message.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
from PIL import Image

BEHAVIOURS = (
    "ok",
    "403",
    "429",
    "500",
    "503",
    "500-html",
    "slow",
    "no-image",
    "safety",
    "blocked",
    "missing",
)
BATCH_RESULTS = ("inline", "file")
_STATUS = {"403": "PERMISSION_DENIED", "429": "RESOURCE_EXHAUSTED", "500": "INTERNAL", "503": "UNAVAILABLE"}


class FakeGemini:
    def __init__(
        self,
        script: Iterable[str] = (),
        latency_s: float = 0.0,
        slow_s: float = 3.0,
        image_size: int = 64,
        batch_polls: int = 1,
        batch_results: str = "inline",
        unknown_models: Iterable[str] = (),
        version_tag: str = "fake-001",
        watermark_fields: dict | None = None,
        download_failures: int = 0,
        echo_key: bool = False,
    ):
        unknown = set(script) - set(BEHAVIOURS)
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; use {BEHAVIOURS}")
        if batch_results not in BATCH_RESULTS:
            raise ValueError(f"batch_results={batch_results!r}; use one of {BATCH_RESULTS}")
        self.batch_results = batch_results
        self.unknown_models = set(unknown_models)
        self.version_tag = version_tag
        self.watermark_fields = dict(watermark_fields or {})
        self.files: dict[str, bytes] = {}
        self.downloads = 0
        self.download_failures = download_failures
        self.echo_key = echo_key
        self.script = deque(script)
        self.latency_s = latency_s
        self.slow_s = slow_s
        self.image_size = image_size
        self.served = Counter()  # behaviour -> replies sent
        self.images_served = 0
        self.api_keys: set[str] = set()
        self.paths: Counter[str] = Counter()
        self.batch_polls = batch_polls
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

    # ------------------------------------------------------------------------------------------- replies
    def next_behaviour(self) -> str:
        with self._lock:
            return self.script.popleft() if self.script else "ok"

    def image_png(self) -> bytes:
        with self._lock:
            self.images_served += 1
            number = self.images_served
        rng = np.random.default_rng(number)
        pixels = rng.integers(0, 256, (self.image_size, self.image_size), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
        return buffer.getvalue()


def _model_of(path: str) -> str:
    """The model id in ``.../models/<id>:method`` ("" when the path names none)."""
    tail = path.split("?")[0].rsplit("models/", 1)
    return tail[1].split(":", 1)[0] if len(tail) == 2 else ""


def _error(behaviour: str) -> dict:
    return {
        "error": {"code": int(behaviour), "status": _STATUS[behaviour], "message": f"injected {behaviour}"}
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeGemini
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.fake
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        with fake._lock:
            fake.paths[self.path.split("?")[0]] += 1
            if self.headers.get("x-goog-api-key"):
                fake.api_keys.add(self.headers["x-goog-api-key"])
        model = _model_of(self.path)
        if model in fake.unknown_models:
            message = (
                f"models/{model} is not found for API version v1beta, or is not supported for this method."
            )
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": message}})
        if self.path.endswith(":batchGenerateContent"):
            return self._create_batch(json.loads(body or b"{}"), model)
        if not self.path.endswith(":generateContent"):
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": self.path}})
        json.loads(body or b"{}")
        behaviour = fake.next_behaviour()
        behaviour = "ok" if behaviour == "missing" else behaviour
        if fake.latency_s:
            time.sleep(fake.latency_s)
        if behaviour == "slow":
            time.sleep(fake.slow_s)
            behaviour = "ok"
        if behaviour in _STATUS:
            self._count(behaviour)
            payload = _error(behaviour)
            if fake.echo_key:
                payload["error"]["message"] += f" for API key {self.headers.get('x-goog-api-key')}"
            return self._send(int(behaviour), payload)
        if behaviour == "500-html":
            self._count(behaviour)
            return self._send(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        self._count(behaviour)
        return self._send(200, self._reply(behaviour, model))

    def _reply(self, behaviour: str, model: str) -> dict:
        fake = self.fake
        usage = {"promptTokenCount": 40, "candidatesTokenCount": 1290, "totalTokenCount": 1330}
        if behaviour == "no-image":
            parts = [{"text": "I can describe a chest X-ray instead."}]
            reply = {
                "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "NO_IMAGE"}]
            }
        elif behaviour == "safety":
            reply = {"candidates": [{"finishReason": "IMAGE_SAFETY"}]}
        elif behaviour == "blocked":
            reply = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}}
        else:
            data = base64.b64encode(fake.image_png()).decode()
            parts = [{"inlineData": {"mimeType": "image/png", "data": data}}]
            candidate = {"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}
            reply = {"candidates": [{**candidate, **fake.watermark_fields}]}
        return {**reply, "usageMetadata": usage, "modelVersion": f"{model}-{fake.version_tag}"}

    # ------------------------------------------------------------------------------------------ batches
    def _create_batch(self, body: dict, model: str) -> None:
        fake = self.fake
        items = body.get("batch", {}).get("inputConfig", {}).get("requests", {}).get("requests", [])
        with fake._lock:
            name = f"batches/fake-{len(fake.batch_jobs) + 1}"
            fake.batch_jobs[name] = {
                "keys": [item.get("metadata", {}).get("key") for item in items],
                "polls_left": fake.batch_polls,
                "output": None,
                "model": model,
            }
        return self._send(200, {"name": name, "metadata": {"name": name, "state": "BATCH_STATE_PENDING"}})

    def do_GET(self) -> None:  # noqa: N802
        fake = self.fake
        path = self.path.split("?")[0]
        with fake._lock:
            fake.paths[path] += 1
        if "files/" in path and path.endswith(":download"):
            data = fake.files.get("files/" + path.split("files/", 1)[1].removesuffix(":download"))
            if data is None:
                return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})
            with fake._lock:
                failing = fake.download_failures > 0
                fake.download_failures -= int(failing)
                fake.downloads += int(not failing)
            if failing:
                return self._send(503, _error("503"))
            return self._send(200, data, "application/octet-stream")
        name = path[path.find("batches/") :] if "batches/" in path else ""
        job = fake.batch_jobs.get(name)
        if job is None:
            return self._send(404, {"error": {"code": 404, "status": "NOT_FOUND", "message": path}})
        with fake._lock:
            running = job["polls_left"] > 0
            job["polls_left"] -= 1
        if running:
            return self._send(200, {"name": name, "metadata": {"name": name, "state": "BATCH_STATE_RUNNING"}})
        if job["output"] is None:
            responses = []
            for key in job["keys"]:
                behaviour = fake.next_behaviour()
                behaviour = "ok" if behaviour in ("slow", "500-html") else behaviour
                self._count(behaviour)
                if behaviour == "missing":
                    continue
                if behaviour in _STATUS:
                    responses.append({"error": _error(behaviour)["error"], "metadata": {"key": key}})
                else:
                    reply = self._reply(behaviour, job["model"])
                    responses.append({"response": reply, "metadata": {"key": key}})
            if fake.batch_results == "file":
                file_name = f"files/{name.removeprefix('batches/')}-results"
                lines = [
                    json.dumps(
                        {"key": item["metadata"]["key"], **{k: v for k, v in item.items() if k != "metadata"}}
                    )
                    for item in responses
                ]
                with fake._lock:
                    fake.files[file_name] = ("\n".join(lines) + "\n").encode()
                job["output"] = {"responsesFile": file_name}
            else:
                job["output"] = {"inlinedResponses": {"inlinedResponses": responses}}
        metadata = {"name": name, "state": "BATCH_STATE_SUCCEEDED", "output": job["output"]}
        return self._send(200, {"name": name, "metadata": metadata, "done": True})

    def _count(self, behaviour: str) -> None:
        with self.fake._lock:
            self.fake.served[behaviour] += 1

    def _send(self, status: int, payload: dict | bytes, content_type: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout) or was killed
            pass
