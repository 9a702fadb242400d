"""Nano Banana (Gemini image models) through the real ``google-genai`` client, on the Gemini API or Vertex AI.

Paid per image and rate-limited, so: bounded concurrency; our own retries (the SDK's are off) on 429, 5xx
and timeouts, up to ``max_retries`` per image, waiting what the server asked (``google.rpc.RetryInfo``'s
``retryDelay``, never less) or, when it said nothing, exponential backoff with jitter; replies without an
image (a block reason, or a finish reason such as IMAGE_SAFETY or NO_IMAGE) are logged with the reason and
asked again up to ``max_no_image``. These stop the run at once, and no queued request is sent after them:
a 429 whose ``QuotaFailure`` has limit 0 (image models have no free tier: billing must be enabled for the key
and model; waiting never helps), a server asking to wait longer than ``max_retry_delay_s``, any other 4xx
(bad key, bad model id), and any other error in a worker (a full disk, say). A model the API does not know
(404 NOT_FOUND: retired or mistyped) stops with one line naming ``successors``.

Backends. ``backend: gemini`` (default) is the Gemini API with a key read only from ``GEMINI_API_KEY`` or
``GOOGLE_API_KEY`` and never written anywhere; it is used explicitly, so ``GOOGLE_GENAI_USE_VERTEXAI`` (or
``GOOGLE_GENAI_USE_ENTERPRISE``) in the environment, which silently switches a default client to Vertex,
changes nothing. ``backend: vertex`` is Vertex AI with ``project`` (or ``GOOGLE_CLOUD_PROJECT``),
``location`` and application-default credentials (``gcloud auth application-default login`` or
``GOOGLE_APPLICATION_CREDENTIALS``), no API key; online only (Vertex batch jobs read Cloud Storage or
BigQuery, which cxrsyn does not manage: ``batch=true`` is refused there in one line).

Every kept image records what the API said about it, read from the raw reply (``cxrsyn.generate.gemini_reply``):
the final image (not an interim thought image), ``thought_images``, the billed token counts (prompt,
thinking, image), ``model_version`` and the watermark columns.
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
from cxrsyn.generate.base import Counts, FatalRequestError, RunStopped, is_transport_error, short_error
from cxrsyn.generate.cost import Billing
from cxrsyn.generate.gemini_batch import generate_batch
from cxrsyn.generate.gemini_reply import image_of, reply_dict, retry_delay_s, zero_quota
from cxrsyn.generate.prompts import ImageRequest
from cxrsyn.generate.store import OutputStore, as_png

KEY_VARIABLES = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
VERTEX_SWITCHES = ("GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_USE_ENTERPRISE")  # the SDK reads these
BACKENDS = ("gemini", "vertex")
CLOUD_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
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
        "(https://aistudio.google.com/apikey), or use Vertex AI with generator.backend=vertex; dry_run=true "
        "shows the prompts without one"
    )


def vertex_switch_set() -> str | None:
    """The environment variable that would silently switch a default google-genai client to Vertex AI."""
    for name in VERTEX_SWITCHES:
        if os.environ.get(name, "").strip().lower() in ("1", "true"):
            return name
    return None


@dataclass
class NanoBanana:
    """``generator=nano_banana`` (and its successors): one ``generate_content`` call per image, or batch jobs."""

    n_per_class: int = 150
    prompt_template: str = "A frontal chest X-ray of a {age} year old {sex} patient. {finding}."
    model: str = "gemini-2.5-flash-image"
    aspect_ratio: str = "1:1"
    image_size: str | None = None  # e.g. "1K" or "2K" where the model supports it; null: the model's default
    image_sizes: list[str] | None = None  # the sizes `model` accepts (checked before any request); null: any
    successors: Mapping[str, str] = field(default_factory=lambda: dict(SUCCESSORS))  # model id -> override
    price_per_image_usd: float | None = (
        None  # a model the price table lacks: USD per image, thinking included
    )
    backend: str = "gemini"  # gemini (API key) | vertex (project, location, application-default credentials)
    project: str | None = None  # Vertex only; null: GOOGLE_CLOUD_PROJECT or the credentials' project
    location: str = "global"  # Vertex only
    base_url: str | None = None  # the tests point this at a local server
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    max_no_image: int = 3
    backoff_initial_s: float = 2.0  # when the server does not say how long to wait
    backoff_max_s: float = 60.0
    max_retry_delay_s: float = 600.0  # a server asking for a longer wait stops the run (a spent daily quota)
    batch: bool = False  # Gemini batch mode: asynchronous, cheaper per image, slower to return
    batch_size: int = 100  # requests per batch job
    batch_poll_s: float = 30.0
    batch_resubmit_unresolved: bool = False  # ask again for batch requests whose result could not be matched
    grid_attributes: Mapping[str, Sequence[str]] = field(default_factory=dict)
    show_progress: bool = True

    name = "nano_banana"

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
        if self.backend not in BACKENDS:
            raise CxrsynError(f"generator.backend={self.backend!r}; use one of {', '.join(BACKENDS)}")
        if self.backend == "vertex" and self.batch:
            raise CxrsynError(
                "generator.batch=true is not available with generator.backend=vertex (Vertex batch jobs read "
                "their requests from Cloud Storage or BigQuery, which cxrsyn does not manage): generate on "
                "Vertex online with generator.batch=false, or batch on the Gemini API with "
                "generator.backend=gemini and GEMINI_API_KEY"
            )
        if self.price_per_image_usd is not None and float(self.price_per_image_usd) < 0:
            raise CxrsynError(f"generator.price_per_image_usd={self.price_per_image_usd} must be 0 or more")

    # --------------------------------------------------------------------------------------- interface
    def image_settings(self) -> dict[str, Any]:
        """The settings that change the images (a folder holds images of one set of them)."""
        return {
            "model": self.model,
            "aspect_ratio": self.aspect_ratio,
            "image_size": self.image_size,
            "prompt_template": self.prompt_template,
        }

    def billing(self) -> Billing:
        price = None if self.price_per_image_usd is None else float(self.price_per_image_usd)
        return Billing(self.model, self.image_size, self.batch, price, self.backend)

    def check_ready(self) -> None:
        if self.backend == "vertex":
            self._vertex_auth()
        else:
            api_key()

    def paid_calls(self, n: int) -> str:
        if self.batch:
            return f"{n} images in {-(-n // max(1, self.batch_size))} batch job(s) (batch pricing)"
        return f"{n} generate_content calls (more if replies are blocked or fail and are asked again)"

    # ------------------------------------------------------------------------------------------ client
    def _vertex_auth(self) -> tuple[Any, str]:
        """Application-default credentials and the project, or one line saying what is missing."""
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            credentials, adc_project = google.auth.default(scopes=[CLOUD_SCOPE])
        except DefaultCredentialsError as error:
            raise CxrsynError(
                f"generator.backend=vertex needs application-default credentials ({short_error(error)}): run "
                "`gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a "
                "service-account key file (Vertex takes no API key)"
            ) from None
        project = self.project or os.environ.get("GOOGLE_CLOUD_PROJECT") or adc_project
        if not project:
            raise CxrsynError(
                "generator.backend=vertex needs a Google Cloud project: set generator.project=<project id> "
                "(or GOOGLE_CLOUD_PROJECT)"
            )
        return credentials, project

    def client(self) -> Any:
        """A google-genai client on the configured backend, chosen explicitly (never by environment)."""
        from google import genai
        from google.genai import types

        for name in ("httpx", "httpx2", "google_genai"):  # one INFO line per request otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
        http_options = types.HttpOptions(base_url=self.base_url, timeout=int(self.timeout_s * 1000))
        if self.backend == "vertex":
            credentials, project = self._vertex_auth()
            print(f"generate: Vertex AI, project {project}, location {self.location}")
            return genai.Client(
                vertexai=True,
                project=project,
                location=self.location,
                credentials=credentials,
                http_options=http_options,
            )
        if switch := vertex_switch_set():
            print(
                f"generate: {switch} is set, but generator.backend=gemini: using the Gemini API with the API key "
                "(generator.backend=vertex for Vertex AI)"
            )
        return genai.Client(vertexai=False, api_key=api_key(), http_options=http_options)

    def generation_config(self) -> dict[str, Any]:
        """``generationConfig`` in the wire format (camelCase): an image, at the configured ratio and size."""
        image_config: dict[str, Any] = {"aspectRatio": self.aspect_ratio}
        if self.image_size:
            image_config["imageSize"] = self.image_size
        return {"responseModalities": ["IMAGE"], "imageConfig": image_config}

    # ---------------------------------------------------------------------------------------- refusals
    def refusal(self, error: Any) -> FatalRequestError:
        """The one line for a 4xx reply that retrying cannot fix."""
        if error.code == 429 and (quota := zero_quota(error)):
            return FatalRequestError(
                f"Gemini answered HTTP 429 RESOURCE_EXHAUSTED with a quota limit of 0 ({quota}) for "
                f"generator.model={self.model!r}: image models have no free tier, so billing must be enabled for "
                "this key and model (AI Studio -> the key's project -> Set up billing, or a key from a project "
                "with billing); nothing was made, rerun once billing is on"
            )
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
        check = (
            f"the credentials' access to Vertex AI in the project, generator.location={self.location!r}"
            if self.backend == "vertex"
            else "the key"
        )
        return FatalRequestError(
            f"Gemini refused the request with HTTP {error.code} ({short_error(error)}); check {check} "
            f"and generator.model={self.model!r}"
        )

    def retry_wait(self, retries: int, server_delay: float | None, reason: str) -> float:
        """Seconds to wait before retry number ``retries``: what the server asked (never less; up to 10% more,
        so workers do not return in step), else exponential backoff with jitter."""
        if server_delay is not None:
            if server_delay > self.max_retry_delay_s:
                raise FatalRequestError(
                    f"Gemini asked to wait {server_delay:g} s before retrying ({reason}), more than "
                    f"generator.max_retry_delay_s={self.max_retry_delay_s:g}: a daily quota is likely spent; "
                    "rerun the same command later (kept images are never asked for twice)"
                )
            return server_delay * random.uniform(1.0, 1.1)  # noqa: S311 - jitter
        delay = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (retries - 1))
        return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter

    # -------------------------------------------------------------------------------------- generation
    def generate(self, requests: Sequence[ImageRequest], store: OutputStore) -> Counts:
        from google.genai import types

        client = self.client()
        try:
            if self.batch:
                return generate_batch(self, client, requests, store)
            # the raw reply too: what the SDK's types drop (watermark fields, unknown parts) is read as sent
            raw = (
                {"should_return_http_response": True}
                if _has_field(types.GenerateContentConfig, "should_return_http_response")
                else {}
            )
            image_config: dict[str, Any] = {"aspect_ratio": self.aspect_ratio}
            if self.image_size:
                image_config["image_size"] = self.image_size
            config = types.GenerateContentConfig(
                response_modalities=["IMAGE"], image_config=types.ImageConfig(**image_config), **raw
            )
            return self._online(client, config, requests, store)
        finally:
            client.close()

    def _online(
        self, client: Any, config: Any, requests: Sequence[ImageRequest], store: OutputStore
    ) -> Counts:
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
                except BaseException as error:
                    stop.set()
                    for future in futures:
                        future.cancel()  # queued work never starts; requests in flight finish and are kept
                    if isinstance(error, CxrsynError):
                        raise RunStopped(str(error), counts) from None
                    raise
        return counts

    def _one(self, client, config, request, store, counts, lock, stop) -> bool:  # noqa: ANN001, PLR0913
        from google.genai import errors

        retries = no_image = 0
        while not stop.is_set():
            server_delay = None
            try:
                response = client.models.generate_content(
                    model=self.model, contents=request.prompt, config=config
                )
            except errors.APIError as error:
                if error.code not in RETRIED_CODES or (error.code == 429 and zero_quota(error)):
                    stop.set()  # before the other workers pick their next request
                    store.log_attempt(request, "fatal", short_error(error), code=error.code)
                    raise self.refusal(error) from None
                reason, code, server_delay = short_error(error), error.code, retry_delay_s(error)
            except Exception as error:  # noqa: BLE001 - timeouts and connection errors from the HTTP layer
                if not is_transport_error(error):
                    raise
                reason, code = f"{type(error).__name__}: {short_error(error)}", None
            else:
                image, why, columns = image_of(reply_dict(response))
                with lock:
                    counts.bill(columns)
                if image is not None:
                    try:
                        png = as_png(image[0], image[1])
                    except (OSError, ValueError) as error:
                        why = f"reply image is not decodable ({type(error).__name__})"
                    else:
                        attempts = retries + no_image + 1
                        store.save(request, png, {**columns, "mime_type": image[1], "attempts": attempts})
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
            store.log_attempt(
                request, "retry", reason, code=code, attempt=retries, retry_delay_s=server_delay
            )
            if retries > self.max_retries:
                store.log_attempt(request, "failed", f"gave up after {retries} retries: {reason}")
                return False
            stop.wait(self.retry_wait(retries, server_delay, reason))  # wakes at once on a stop
        return False


def _has_field(model: Any, name: str) -> bool:
    return name in getattr(model, "model_fields", {})
