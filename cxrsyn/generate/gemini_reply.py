"""Reading Gemini's wire format: replies (the image to keep, what was billed, what the API said about
watermarks) and error bodies (quota and retry hints). The interactive and the batch path read the same.

``image_of`` takes a reply in the wire format (camelCase JSON) and returns the image or the reason there is
none, and the columns every record keeps:

- the final image. Gemini 3 image models think: a reply may carry interim "thought" images (parts with
  ``"thought": true`` and a ``thoughtSignature``) before the final one. The image kept is the LAST image part
  not marked as a thought; ``thought_images`` counts the drafts that came back. Whether the API returns
  thought parts when ``include_thoughts`` is not asked for is not documented, so both replies are read the
  same way: drafts are skipped when present, and a reply with only drafts has no image.
- what was billed: ``usage_prompt_token_count``, ``usage_candidates_token_count``,
  ``usage_image_token_count`` (the IMAGE entry of ``candidatesTokensDetails`` where reported),
  ``usage_thoughts_token_count`` (thinking, billed at the text-output price) and ``usage_total_token_count``.
- ``model_version`` (the ``modelVersion`` the API reports) and ``watermark``, ``visible_mark``, ``synthid``
  (any field of the reply whose name mentions a watermark or SynthID, verbatim as JSON; ``unknown`` when
  the reply has none).

Error bodies (``{"error": {"code", "status", "message", "details": [...]}}``): ``retry_delay_s`` reads the
``google.rpc.RetryInfo`` detail (``"retryDelay": "38s"``), ``zero_quota`` a ``google.rpc.QuotaFailure`` whose
limit is 0 (a key whose project has no billing for an image model: no free tier, so waiting never helps).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

UNKNOWN = "unknown"
QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
USAGE_FIELDS = (
    ("promptTokenCount", "usage_prompt_token_count"),
    ("candidatesTokenCount", "usage_candidates_token_count"),
    ("thoughtsTokenCount", "usage_thoughts_token_count"),
    ("totalTokenCount", "usage_total_token_count"),
)


def reply_dict(response: Any) -> dict[str, Any]:
    """The reply as the API sent it (wire JSON, camelCase): the raw body when the SDK kept it, else the SDK's
    parsed response dumped back to the wire format (fields the SDK does not know are then lost)."""
    http = getattr(response, "sdk_http_response", None)
    body = getattr(http, "body", None)
    if body:
        return json.loads(body)
    return response.model_dump(mode="json", by_alias=True, exclude_none=True)


def usage_columns(reply: Mapping[str, Any]) -> dict[str, Any]:
    """The billed token counts of a reply (only those it reports), ``usage_*``."""
    usage = reply.get("usageMetadata") or {}
    columns = {column: usage[name] for name, column in USAGE_FIELDS if usage.get(name) is not None}
    for detail in usage.get("candidatesTokensDetails") or []:
        if str(detail.get("modality", "")).upper() == "IMAGE" and detail.get("tokenCount") is not None:
            columns["usage_image_token_count"] = detail["tokenCount"]
    return columns


def image_of(reply: Mapping[str, Any]) -> tuple[tuple[bytes, str] | None, str, dict[str, Any]]:
    """From a reply in the wire format: (final image bytes and mime type) or None with the reason, and the
    columns every record keeps (module doc)."""
    columns: dict[str, Any] = usage_columns(reply)
    columns["model_version"] = reply.get("modelVersion") or UNKNOWN
    columns.update(watermark_columns(reply))
    columns["thought_images"] = 0
    block = (reply.get("promptFeedback") or {}).get("blockReason")
    if block:
        return None, f"prompt blocked: {block}", columns
    candidates = reply.get("candidates") or []
    final: Mapping[str, Any] | None = None
    for candidate in candidates[:1]:  # one candidate is asked for; a second would be another paid image
        for part in (candidate.get("content") or {}).get("parts") or []:
            inline = part.get("inlineData") or {}
            if not inline.get("data"):
                continue
            if part.get("thought"):
                columns["thought_images"] += 1
            else:
                final = inline  # the last non-thought image part is the answer
    if final is not None:
        return (_b64decode(final["data"]), final.get("mimeType") or ""), "", columns
    finish = [str(c["finishReason"]) for c in candidates if c.get("finishReason")]
    drafts = columns["thought_images"]
    if drafts:
        return None, f"only {drafts} draft (thought) image(s), no final image", columns
    return None, f"no image in the reply (finish reason {', '.join(finish) or 'none'})", columns


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


# ------------------------------------------------------------------------------------------------ errors
def error_body(error: Any) -> dict[str, Any]:
    """The ``error`` object of an API error (``google.genai.errors.APIError.details`` holds the whole body)."""
    details = getattr(error, "details", None)
    if isinstance(details, list) and len(details) == 1:
        details = details[0]
    if not isinstance(details, Mapping):
        return {}
    inner = details.get("error", details)
    return dict(inner) if isinstance(inner, Mapping) else {}


def _details(error: Any, kind: str) -> list[Mapping[str, Any]]:
    return [
        detail
        for detail in error_body(error).get("details") or []
        if isinstance(detail, Mapping) and detail.get("@type") == kind
    ]


_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)s\s*$")


def retry_delay_s(error: Any) -> float | None:
    """Seconds the server asked to wait (``google.rpc.RetryInfo.retryDelay``, a protobuf Duration such as
    ``"38s"`` or ``"0.250s"``), or None when it said nothing."""
    for detail in _details(error, RETRY_INFO):
        delay = detail.get("retryDelay")
        if isinstance(delay, Mapping):  # the proto form {"seconds": ..., "nanos": ...}
            return float(delay.get("seconds") or 0) + float(delay.get("nanos") or 0) / 1e9
        match = _DURATION.match(str(delay or ""))
        if match:
            return float(match.group(1))
    return None


def zero_quota(error: Any) -> str | None:
    """The quota whose limit is 0 (``quotaId``, or ``quotaMetric``), when the error is a QuotaFailure with a
    limit of 0: the project behind the key has no quota at all for this model (image models have no free
    tier: billing must be enabled). None otherwise."""
    body = error_body(error)
    violations = [v for detail in _details(error, QUOTA_FAILURE) for v in detail.get("violations") or []]
    for violation in violations:
        if str(violation.get("quotaValue", "")).strip() == "0":
            return str(violation.get("quotaId") or violation.get("quotaMetric") or "unnamed quota")
    if violations and re.search(r"\blimit: 0\b", str(body.get("message", ""))):
        first = violations[0]
        return str(first.get("quotaId") or first.get("quotaMetric") or "unnamed quota")
    return None
