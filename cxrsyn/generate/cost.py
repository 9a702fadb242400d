"""What a generation run will cost before it pays: the price table in ``conf/generate.yaml`` (``prices``).

Prices are list prices per image by model and image size, with the date they were read (``as_of``); batch
mode costs ``batch_discount`` less. The estimate counts one paid image per request still to make; blocked
or failed replies that are asked again cost more. Local generators (phantom, RoentGen) cost nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEFAULT_SIZE = "default"  # the price of a model's default size (generator.image_size: null)


def estimate_cost(generator: Any, n_requests: int, prices: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{requests, model, image_size, batch, estimated_cost_usd, prices_as_of}``; the cost is None when the
    table has no price for the model and size."""
    prices = prices or {}
    batch = bool(getattr(generator, "batch", False))
    image_size = getattr(generator, "image_size", None)
    cost: float | None = 0.0
    if getattr(generator, "paid", False):
        per_size = (prices.get("usd_per_image") or {}).get(generator.model) or {}
        price = per_size.get(DEFAULT_SIZE if image_size is None else str(image_size))
        if price is None:
            cost = None
        else:
            discount = float(prices.get("batch_discount") or 0.0) if batch else 0.0
            cost = round(n_requests * float(price) * (1.0 - discount), 4)
    return {
        "requests": n_requests,
        "model": generator.model,
        "image_size": image_size,
        "batch": batch,
        "estimated_cost_usd": cost,
        "prices_as_of": prices.get("as_of"),
    }


def missing_price_note(estimate: Mapping[str, Any]) -> str | None:
    if estimate["estimated_cost_usd"] is not None:
        return None
    size = DEFAULT_SIZE if estimate["image_size"] is None else estimate["image_size"]
    return (
        f"no price for {estimate['model']} at image size {size} in conf/generate.yaml prices.usd_per_image: "
        "check Google's pricing page before a large run, and add it there"
    )
