"""What every generator shares: the counts a run reports, and reading Gemini replies and errors (the
interactive and the batch path read the same wire format).

``image_of`` takes a reply in the wire format (camelCase JSON) and returns the image or the reason there is
none, and the columns every record keeps: usage metadata, ``model_version`` (the ``modelVersion`` the API
reports) and ``watermark``, ``visible_mark``, ``synthid`` (any field of the reply whose name mentions a
watermark or SynthID, verbatim as JSON; ``unknown`` when the reply has none).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cxrsyn.core.errors import CxrsynError

UNKNOWN = "unknown"


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


def reply_dict(response: Any) -> dict[str, Any]:
    """The reply as the API sent it (wire JSON, camelCase): the raw body when the SDK kept it, else the SDK's
    parsed response dumped back to the wire format (fields the SDK does not know are then lost)."""
    http = getattr(response, "sdk_http_response", None)
    body = getattr(http, "body", None)
    if body:
        return json.loads(body)
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def image_of(reply: Mapping[str, Any]) -> tuple[tuple[bytes, str] | None, str, dict[str, Any]]:
    """From a reply in the wire format: (image bytes and mime type) or None with the reason, and the columns
    every record keeps (usage metadata, model version, watermark fields)."""
    usage = {}
    for name, column in (
        ("promptTokenCount", "prompt_token_count"),
        ("candidatesTokenCount", "candidates_token_count"),
        ("totalTokenCount", "total_token_count"),
    ):
        value = (reply.get("usageMetadata") or {}).get(name)
        if value is not None:
            usage[f"usage_{column}"] = value
    usage["model_version"] = reply.get("modelVersion") or UNKNOWN
    usage.update(watermark_columns(reply))
    block = (reply.get("promptFeedback") or {}).get("blockReason")
    if block:
        return None, f"prompt blocked: {block}", usage
    candidates = reply.get("candidates") or []
    for candidate in candidates:
        for part in (candidate.get("content") or {}).get("parts") or []:
            inline = part.get("inlineData") or {}
            if inline.get("data"):
                return (_b64decode(inline["data"]), inline.get("mimeType") or ""), "", usage
    finish = [str(c["finishReason"]) for c in candidates if c.get("finishReason")]
    return None, f"no image in the reply (finish reason {', '.join(finish) or 'none'})", usage


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padded or not (the wire uses the first, pydantic's JSON dump the second)."""
    text = text.replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4))


def watermark_columns(reply: Mapping[str, Any]) -> dict[str, str]:
    """Every field of the reply whose name mentions a watermark or SynthID, as JSON (``unknown`` if none):
    all of them (``watermark``), those naming a visible mark (``visible_mark``) and SynthID (``synthid``)."""
    found: dict[str, Any] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                if key == "inlineData":
                    continue
                where = f"{path}.{key}" if path else str(key)
                if any(word in str(key).lower() for word in ("watermark", "synthid")):
                    found[where] = item
                else:
                    walk(item, where)
        elif isinstance(value, list):
            for number, item in enumerate(value):
                walk(item, f"{path}[{number}]")

    walk(reply, "")

    def as_json(fields: Mapping[str, Any]) -> str:
        if not fields:
            return UNKNOWN
        values = list(fields.values())
        return json.dumps(values[0] if len(values) == 1 else dict(fields), sort_keys=True)

    def named(word: str) -> dict[str, Any]:
        return {path: item for path, item in found.items() if word in path.rsplit(".", 1)[-1].lower()}

    return {
        "watermark": as_json(found),
        "visible_mark": as_json(named("visible")),
        "synthid": as_json(named("synthid")),
    }


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


def is_transport_error(error: BaseException) -> bool:
    return isinstance(error, _transport_errors())


def short_error(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= 200 else text[:197] + "..."
