"""Nano Banana (Gemini image models) through the real ``google-genai`` client.

Paid per image and rate-limited, so: bounded concurrency; our own retries (the SDK's are off) with
exponential backoff and jitter on 429, 5xx and timeouts, up to ``max_retries`` per image; replies without an
image (a block reason, or a finish reason such as IMAGE_SAFETY or NO_IMAGE) are logged with the reason and
asked again up to ``max_no_image``; 4xx errors other than 429 (bad key, bad model id) stop the run at once.
The key is read only from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` and never written anywhere.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from cxrsyn.errors import CxrsynError
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
RETRIED_CODES = (408, 429, 500, 502, 503, 504)


def api_key() -> str:
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return os.environ[name]
    raise CxrsynError(
        "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment "
        "(https://aistudio.google.com/apikey); dry_run=true shows the prompts without one"
    )


class FatalRequestError(CxrsynError):
    """A reply that retrying cannot fix (bad key, unknown model, malformed request)."""


@dataclass
class Counts:
    ok: int = 0
    retried: int = 0
    no_image: int = 0
    failed: int = 0

    def postfix(self) -> dict[str, int]:
        return {"ok": self.ok, "retried": self.retried, "blocked": self.no_image, "failed": self.failed}


@dataclass
class NanoBanana:
    """``generator=nano_banana``: one ``generate_content`` call per image."""

    n_per_class: int = 150
    prompt_template: str = "A frontal chest X-ray of a {age} year old {sex} patient. {finding}."
    model: str = "gemini-2.5-flash-image"
    aspect_ratio: str = "1:1"
    image_size: str | None = None  # e.g. "1K" or "2K" where the model supports it; null: the model's default
    base_url: str | None = None  # the tests point this at a local server
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    max_no_image: int = 3
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 60.0
    batch: bool = False  # Gemini batch mode: asynchronous, cheaper per image, slower to return
    batch_size: int = 100  # requests per batch job
    batch_poll_s: float = 30.0
    show_progress: bool = True

    name = "nano_banana"

    def paid_calls(self, n: int) -> str:
        if self.batch:
            return f"{n} images in {-(-n // max(1, self.batch_size))} batch job(s) (batch pricing)"
        return f"{n} generate_content calls (more if replies are blocked or fail and are asked again)"

    def generate(self, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
        from google import genai
        from google.genai import types

        for name in ("httpx", "httpx2", "google_genai"):  # one INFO line per request otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
        client = genai.Client(
            api_key=api_key(),
            http_options=types.HttpOptions(base_url=self.base_url, timeout=int(self.timeout_s * 1000)),
        )
        image_config: dict[str, Any] = {"aspect_ratio": self.aspect_ratio}
        if self.image_size:
            image_config["image_size"] = self.image_size
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(**image_config)
        )
        if self.batch:
            from cxrsyn.generate.gemini_batch import generate_batch

            counts = generate_batch(self, client, config, requests, store)
            client.close()
            return counts
        counts = Counts()
        lock = threading.Lock()
        stop = threading.Event()
        with tqdm(total=len(requests), desc="nano_banana", unit="img", disable=not self.show_progress) as bar:

            def one(request: ImageRequest) -> None:
                if stop.is_set():
                    return
                try:
                    outcome = self._one(client, config, request, store, counts, lock, stop)
                except FatalRequestError:
                    stop.set()
                    raise
                with lock:
                    if outcome:
                        counts.ok += 1
                    else:
                        counts.failed += 1
                    bar.update(1)
                    bar.set_postfix(counts.postfix())

            with ThreadPoolExecutor(max(1, self.concurrency)) as pool:
                futures = [pool.submit(one, request) for request in requests]
                for future in futures:
                    future.result()  # re-raises a fatal error after the pool drains
        client.close()
        return counts

    def _one(self, client, config, request, store, counts, lock, stop) -> bool:  # noqa: ANN001, PLR0913
        from google.genai import errors

        retries = no_image = 0
        while not stop.is_set():
            try:
                response = client.models.generate_content(
                    model=self.model, contents=request.prompt, config=config
                )
            except errors.APIError as error:
                if error.code not in RETRIED_CODES:
                    store.log_attempt(request, "fatal", _short(error), code=error.code)
                    raise FatalRequestError(
                        f"Gemini refused the request with HTTP {error.code} ({_short(error)}); check the key "
                        f"and generator.model={self.model!r}"
                    ) from None
                reason, code = _short(error), error.code
            except Exception as error:  # noqa: BLE001 - timeouts and connection errors from the HTTP layer
                if not _is_transport_error(error):
                    raise
                reason, code = f"{type(error).__name__}: {_short(error)}", None
            else:
                image, why, usage = _image_of(response)
                if image is not None:
                    try:
                        png = as_png(image[0], image[1])
                    except (OSError, ValueError) as error:
                        why = f"reply image is not decodable ({type(error).__name__})"
                    else:
                        store.save(
                            request, png, {**usage, "mime_type": image[1], "attempts": retries + no_image + 1}
                        )
                        return True
                no_image += 1
                with lock:
                    counts.no_image += 1
                store.log_attempt(request, "no_image", why, attempt=retries + no_image)
                if no_image > self.max_no_image:
                    store.log_attempt(request, "failed", f"no image after {no_image} replies: {why}")
                    return False
                continue
            retries += 1
            with lock:
                counts.retried += 1
            store.log_attempt(request, "retry", reason, code=code, attempt=retries)
            if retries > self.max_retries:
                store.log_attempt(request, "failed", f"gave up after {retries} retries: {reason}")
                return False
            delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (retries - 1))
            time.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not cryptography
        return False


def _image_of(response: Any) -> tuple[tuple[bytes, str] | None, str, dict[str, Any]]:
    """(image bytes and mime type) or None with the reason, and the usage metadata as flat columns."""
    usage = {}
    meta = getattr(response, "usage_metadata", None)
    if meta is not None:
        for name in ("prompt_token_count", "candidates_token_count", "total_token_count"):
            value = getattr(meta, name, None)
            if value is not None:
                usage[f"usage_{name}"] = value
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        return None, f"prompt blocked: {_enum_name(feedback.block_reason)}", usage
    for candidate in response.candidates or []:
        for part in (candidate.content.parts if candidate.content else None) or []:
            inline = getattr(part, "inline_data", None)
            if inline is not None and inline.data:
                return (inline.data, inline.mime_type or ""), "", usage
    finish = [_enum_name(c.finish_reason) for c in response.candidates or [] if c.finish_reason]
    return None, f"no image in the reply (finish reason {', '.join(finish) or 'none'})", usage


def _enum_name(value: Any) -> str:
    return getattr(value, "name", None) or str(value)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Timeouts and connection failures of whichever HTTP library this google-genai uses (httpx or httpx2)."""
    import importlib

    classes: list[type[BaseException]] = [TimeoutError, ConnectionError]
    for name in ("httpx", "httpx2"):
        try:
            classes.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(classes)


def _is_transport_error(error: BaseException) -> bool:
    return isinstance(error, _transport_errors())


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
