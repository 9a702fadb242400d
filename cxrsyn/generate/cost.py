"""What a generation run will cost before it pays, and what it spent: one price table, ``conf/prices/gemini.yaml``
(``prices`` in the composed config), with its source and the date it was read (``as_of``).

Per model: the list price of one image by ``generator.image_size`` (``default`` for null), the price of a
million prompt (input) tokens and of a million thinking tokens (Gemini 3 image models think, and thinking is
billed at the text-output price), and ``thinking_tokens_per_image``, the thinking an estimate assumes per
image. Batch mode costs ``batch_discount`` less on all of it. The estimate counts one paid reply per request
still to make (blocked or failed replies asked again cost more); prompt tokens are approximated from the
prompt text (``CHARS_PER_TOKEN``). The spend of a run is priced from what its replies reported
(``usageMetadata``): images kept, prompt and thinking tokens.

``generator.price_per_image_usd`` prices a model the table lacks (or overrides it): what one image costs,
thinking included, in the mode the run uses (no discount is applied to it). A paid run whose model and size
have no price stops before any request (``price_refusal``): no silent zero. Local generators (phantom,
RoentGen) cost nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_SIZE = "default"  # the price of a model's default size (generator.image_size: null)
PRICE_FILE = "conf/prices/gemini.yaml"
CHARS_PER_TOKEN = 4  # Gemini's tokenizer, roughly, on English text (prompt tokens are a small share)
TABLE = "price table"
EXPLICIT = "generator.price_per_image_usd"


@dataclass(frozen=True)
class Billing:
    """What a paid generator's run is billed by: the model, the image size, batch or not, and an explicit
    per-image price when the user gave one."""

    model: str
    image_size: str | None = None
    batch: bool = False
    price_per_image_usd: float | None = None
    backend: str = "gemini"


def _size_key(image_size: str | None) -> str:
    return DEFAULT_SIZE if image_size is None else str(image_size)


def unit_prices(billing: Billing, prices: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """USD per image, per million thinking tokens and per million prompt tokens (batch discount applied),
    the assumed thinking per image and where the prices came from; None when the table has no price."""
    prices = prices or {}
    if billing.price_per_image_usd is not None:
        return {
            "image": float(billing.price_per_image_usd),
            "thinking_per_million": 0.0,
            "prompt_per_million": 0.0,
            "thinking_tokens_per_image": None,
            "source": EXPLICIT,
        }
    model = (prices.get("models") or {}).get(billing.model) or {}
    image = (model.get("usd_per_image") or {}).get(_size_key(billing.image_size))
    if image is None:
        return None
    keep = 1.0 - (float(prices.get("batch_discount") or 0.0) if billing.batch else 0.0)
    return {
        "image": float(image) * keep,
        "thinking_per_million": float(model.get("usd_per_million_thinking_tokens") or 0.0) * keep,
        "prompt_per_million": float(model.get("usd_per_million_input_tokens") or 0.0) * keep,
        "thinking_tokens_per_image": int(model.get("thinking_tokens_per_image") or 0),
        "source": TABLE,
    }


def prompt_tokens(prompt: str) -> int:
    return math.ceil(len(prompt) / CHARS_PER_TOKEN)


def estimate_cost(
    billing: Billing | None, model: str, prompts: Sequence[str], prices: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``{requests, model, image_size, batch, estimated_cost_usd, prices_as_of, ...}`` for the prompts still to
    make; the cost is None when the table has no price for the model and size (and no explicit price)."""
    prices = prices or {}
    estimate: dict[str, Any] = {
        "requests": len(prompts),
        "model": model,
        "image_size": billing.image_size if billing else None,
        "batch": bool(billing and billing.batch),
        "estimated_cost_usd": 0.0,
        "prices_as_of": prices.get("as_of"),
    }
    if billing is None:
        return estimate
    units = unit_prices(billing, prices)
    if units is None:
        return {**estimate, "estimated_cost_usd": None}
    thinking = (units["thinking_tokens_per_image"] or 0) * units["thinking_per_million"] / 1e6
    prompt = sum(prompt_tokens(text) for text in prompts) * units["prompt_per_million"] / 1e6
    per_image = {"image": units["image"], "thinking": thinking}
    total = len(prompts) * (units["image"] + thinking) + prompt
    return {
        **estimate,
        "estimated_cost_usd": round(total, 4),
        "usd_per_image": {key: round(value, 6) for key, value in per_image.items()},
        "prompt_usd": round(prompt, 6),
        "assumed_thinking_tokens_per_image": units["thinking_tokens_per_image"],
        "price_source": PRICE_FILE if units["source"] == TABLE else EXPLICIT,
    }


def spend(billing: Billing | None, ok: int, billed: Mapping[str, Any], prices: Mapping[str, Any] | None):
    """What the replies of a run cost (``None`` for a free generator or an unknown price): ``ok`` images
    kept at the per-image price, plus the prompt and thinking tokens every reply reported."""
    if billing is None:
        return None
    units = unit_prices(billing, prices)
    if units is None:
        return None
    prompt = int(billed.get("usage_prompt_token_count", 0))
    thoughts = int(billed.get("usage_thoughts_token_count", 0))
    usd = {
        "images": ok * units["image"],
        "thinking": thoughts * units["thinking_per_million"] / 1e6,
        "prompt": prompt * units["prompt_per_million"] / 1e6,
    }
    return {
        "images": ok,
        "prompt_tokens": prompt,
        "thoughts_tokens": thoughts,
        "thought_images": int(billed.get("thought_images", 0)),
        "usd": {key: round(value, 6) for key, value in usd.items()},
        "total_usd": round(sum(usd.values()), 4),
        "prices_as_of": (prices or {}).get("as_of"),
        "price_source": PRICE_FILE if units["source"] == TABLE else EXPLICIT,
    }


def missing_price_note(estimate: Mapping[str, Any]) -> str | None:
    if estimate["estimated_cost_usd"] is not None:
        return None
    size = _size_key(estimate["image_size"])
    return (
        f"no price for {estimate['model']} at image size {size} in {PRICE_FILE}: a real run stops until you "
        "pass generator.price_per_image_usd=<USD per image, thinking included> or add the model there "
        "(https://ai.google.dev/gemini-api/docs/pricing)"
    )


def price_refusal(estimate: Mapping[str, Any]) -> str | None:
    """The one line that stops a paid run whose price is unknown (before any request)."""
    if estimate["estimated_cost_usd"] is not None or not estimate["requests"]:
        return None
    size = _size_key(estimate["image_size"])
    return (
        f"no price for generator.model={estimate['model']!r} at image size {size} in {PRICE_FILE}, so the cost "
        f"of {estimate['requests']} request(s) is unknown: pass generator.price_per_image_usd=<USD per image, "
        "thinking included> from https://ai.google.dev/gemini-api/docs/pricing, or add the model to "
        f"{PRICE_FILE}; nothing was sent"
    )


def cost_table(prices: Mapping[str, Any], n_images: int = 300) -> list[dict[str, Any]]:
    """Rows of what ``n_images`` cost per model and size, online and in batch, thinking included at the
    table's assumption (docs/generating.md shows these)."""
    rows = []
    for model, entry in (prices.get("models") or {}).items():
        for size in entry.get("usd_per_image") or {}:
            if size == DEFAULT_SIZE and len(entry["usd_per_image"]) > 1:
                continue  # the default size is one of the named ones
            row: dict[str, Any] = {"model": model, "image_size": size}
            for batch in (False, True):
                billing = Billing(model, None if size == DEFAULT_SIZE else size, batch)
                units = unit_prices(billing, prices)
                assert units is not None
                thinking = units["thinking_tokens_per_image"] * units["thinking_per_million"] / 1e6
                row["batch_usd" if batch else "online_usd"] = round(n_images * (units["image"] + thinking), 2)
            row["thinking_tokens_per_image"] = int(entry.get("thinking_tokens_per_image") or 0)
            rows.append(row)
    return rows
