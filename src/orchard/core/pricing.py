"""USD cost from token counts, for agents that report tokens but no cost (Codex, Gemini, Aider).

The table is a default; an agent entry's `pricing: {input_per_mtok: …, output_per_mtok: …}` overrides it.
Prices are USD per million tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    """USD per million input (incl. cached) and output tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None


# Longest matching prefix wins; list public list prices of common models. Unknown models cost 0 unless configured.
DEFAULT_PRICES: Mapping[str, Price] = {
    "gpt-5-codex": Price(1.25, 10.0, 0.125),
    "gpt-5-mini": Price(0.25, 2.0, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-5": Price(1.25, 10.0, 0.125),
    "gpt-4.1": Price(2.0, 8.0, 0.5),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "gemini-2.5-pro": Price(1.25, 10.0, 0.31),
    "gemini-2.5-flash": Price(0.30, 2.50, 0.075),
    "claude-sonnet-4": Price(3.0, 15.0, 0.30),
    "claude-opus-4": Price(15.0, 75.0, 1.50),
    "claude-haiku-4": Price(1.0, 5.0, 0.10),
}


def price_for(model: str | None, override: Mapping[str, object] | None = None) -> Price | None:
    """The configured price, else the default for the longest matching model prefix, else None."""
    if override:
        return Price(float(str(override.get("input_per_mtok", 0))), float(str(override.get("output_per_mtok", 0))),
                     float(str(override["cached_input_per_mtok"])) if "cached_input_per_mtok" in override else None)
    if not model:
        return None
    name = model.split("/")[-1].lower()
    matches = [key for key in DEFAULT_PRICES if name.startswith(key)]
    return DEFAULT_PRICES[max(matches, key=len)] if matches else None


def cost_usd(price: Price | None, tokens_in: int, tokens_out: int, cached_in: int = 0) -> float:
    """Cost of one attempt; `cached_in` is the part of `tokens_in` served from cache."""
    if price is None:
        return 0.0
    cached_rate = price.cached_input_per_mtok if price.cached_input_per_mtok is not None else price.input_per_mtok
    fresh = max(0, tokens_in - cached_in)
    return (fresh * price.input_per_mtok + cached_in * cached_rate + tokens_out * price.output_per_mtok) / 1e6
