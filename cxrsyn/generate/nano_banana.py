"""Nano Banana (Gemini image models) through the real ``google-genai`` client.

Paid per image and rate-limited, so: bounded concurrency; our own retries (the SDK's are off) with
exponential backoff and jitter on 429, 5xx and timeouts, up to ``max_retries`` per image; replies without an
image (a block reason, or a finish reason such as IMAGE_SAFETY or NO_IMAGE) are logged with the reason and
asked again up to ``max_no_image``; 4xx errors other than 429 (bad key, bad model id) stop the run at once,
and so does any other error in a worker (a full disk, say): no queued request is sent after it. A model the
API does not know (404 NOT_FOUND: retired or mistyped) stops with one line naming ``successors``.
The key is read only from ``GEMINI_API_KEY`` or ``GOOGLE_API_KEY`` and never written anywhere.

Every kept image records what the API said about it, read from the raw reply: ``model_version`` (the
``modelVersion`` the API reports), and ``watermark``, ``visible_mark`` and ``synthid`` (any field of the reply
whose name mentions a watermark or SynthID, verbatim as JSON; ``unknown`` when the reply has none, which is
what the Gemini API answers today).
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from cxrsyn.core.errors import CxrsynError
from cxrsyn.core.keys import checked_key
from cxrsyn.generate.base import (
    Counts,
    FatalRequestError,
    image_of,
    is_transport_error,
    reply_dict,
    short_error,
)
from cxrsyn.generate.gemini_batch import generate_batch
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
RETRIED_CODES = (408, 429, 500, 502, 503, 504)
NOT_FOUND = 404
# Successors of the paper's model (study.md section 8), named when Google answers 404 for generator.model
SUCCESSORS = {
    "gemini-3.1-flash-image": "generator=nano_banana_2",
    "gemini-3-pro-image": "generator=nano_banana_pro",
}


def api_key() -> str:
    for name in KEY_VARIABLES:
        if os.environ.get(name):
            return checked_key(name)  # a key that is no valid header value stops here, before any request
    raise CxrsynError(
        "no Gemini API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in the environment "
        "(https://aistudio.google.com/apikey); dry_run=true shows the prompts without one"
    )


@dataclass
class NanoBanana:
    """``generator=nano_banana``: one ``generate_content`` call per image."""

    n_per_class: int = 150
    prompt_template: str = "A frontal chest X-ray of a {age} year old {sex} patient. {finding}."
    model: str = "gemini-2.5-flash-image"
    aspect_ratio: str = "1:1"
    image_size: str | None = None  # e.g. "1K" or "2K" where the model supports it; null: the model's default
    image_sizes: list[str] | None = None  # the sizes `model` accepts (checked before any request); null: any
    successors: Mapping[str, str] = field(default_factory=lambda: dict(SUCCESSORS))  # model id -> override
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
    paid = True  # priced per image: conf/generate.yaml prices

    def __post_init__(self) -> None:
        if self.image_size is not None:  # generator.image_size=512 arrives as an int
            self.image_size = str(self.image_size)
        if self.image_sizes is not None and self.image_size is not None:
            sizes = [str(size) for size in self.image_sizes]
            if str(self.image_size) not in sizes:
                raise CxrsynError(
                    f"generator.image_size={self.image_size!r} is not offered by {self.model}; use one of "
                    f"{', '.join(sizes)} (or null for the model's default)"
                )

    def check_ready(self) -> None:
        api_key()

    def image_settings(self) -> dict[str, Any]:
        """The settings that change the images (a folder holds images of one set of them)."""
        return {
            "model": self.model,
            "aspect_ratio": self.aspect_ratio,
            "image_size": self.image_size,
            "prompt_template": self.prompt_template,
        }

    def refusal(self, error: Any) -> FatalRequestError:
        """The one line for a 4xx reply that retrying cannot fix."""
        if error.code == NOT_FOUND:
            successors = {
                model: override for model, override in self.successors.items() if model != self.model
            }
            named = ", ".join(f"{model} ({override})" for model, override in successors.items())
            return FatalRequestError(
                f"Gemini has no model generator.model={self.model!r} (HTTP 404 NOT_FOUND: retired or unknown id); "
                f"successors: {named or 'none configured'}; rerun with "
                f"{' or '.join(successors.values()) or 'generator.model=<a current id>'} (each writes to its own folder)"
            )
        return FatalRequestError(
            f"Gemini refused the request with HTTP {error.code} ({short_error(error)}); check the key "
            f"and generator.model={self.model!r}"
        )

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
        # the raw reply too: what the SDK's types drop (watermark fields) is recorded as the API sent it
        raw = (
            {"should_return_http_response": True}
            if not self.batch and _has_field(types.GenerateContentConfig, "should_return_http_response")
            else {}
        )
        config = types.GenerateContentConfig(
            response_modalities=["IMAGE"], image_config=types.ImageConfig(**image_config), **raw
        )
        if self.batch:
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
                except BaseException:  # a refusal, a full disk, a bug: no request is sent after it
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
                try:
                    for future in as_completed(futures):
                        future.result()  # the first error in any worker surfaces here at once
                except BaseException:
                    stop.set()
                    for future in futures:
                        future.cancel()  # queued work never starts; requests in flight finish and are kept
                    raise
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
                    store.log_attempt(request, "fatal", short_error(error), code=error.code)
                    raise self.refusal(error) from None
                reason, code = short_error(error), error.code
            except Exception as error:  # noqa: BLE001 - timeouts and connection errors from the HTTP layer
                if not is_transport_error(error):
                    raise
                reason, code = f"{type(error).__name__}: {short_error(error)}", None
            else:
                image, why, usage = image_of(reply_dict(response))
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
            stop.wait(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter; wakes at once on a stop
        return False


def _has_field(model: Any, name: str) -> bool:
    return name in getattr(model, "model_fields", {})
