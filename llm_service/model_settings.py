"""Parsers of the per-model GigaChat settings: fallback chains and context lengths.

Declared here (not in llm_worker) because llm_service/config.py checks them at load time, and the
worker's client reads the same parsed values (docs/gigachat-client.md).
"""

from __future__ import annotations

from collections.abc import Mapping

# Context lengths in tokens when GIGACHAT_CONTEXT_LENGTHS names none for a model. GigaChat 2 family:
# 128k (Sber's launch post); 131072 for GigaChat-2-Max as catalogued. Per-model official figures are
# unconfirmed, so the smaller reading is the default and an operator may raise it.
DEFAULT_CONTEXT_LENGTHS: Mapping[str, int] = {
    "GigaChat": 128000,
    "GigaChat-2": 128000,
    "GigaChat-2-Pro": 128000,
    "GigaChat-2-Max": 131072,
}


def _pairs(raw: str, what: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (part.strip() for part in raw.split(";")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"expected {what}, got {item!r}")
        pairs.append((name.strip(), value.strip()))
    return pairs


def parse_fallback_models(raw: str) -> dict[str, tuple[str, ...]]:
    """``A=B,C;D=E`` -> {"A": ("B", "C"), "D": ("E",)}; ValueError on a malformed or looping chain."""
    chains: dict[str, tuple[str, ...]] = {}
    for name, value in _pairs(raw, "MODEL=FALLBACK[,FALLBACK...] separated by ';'"):
        fallbacks = tuple(m.strip() for m in value.split(",") if m.strip())
        if name in chains:
            raise ValueError(f"model {name!r} has two chains")
        if name in fallbacks or len(set(fallbacks)) != len(fallbacks):
            raise ValueError(f"the chain of {name!r} repeats a model")
        chains[name] = fallbacks
    return chains


def parse_context_lengths(raw: str) -> dict[str, int]:
    """``A=32768,B=131072`` over the defaults; ValueError on a malformed or non-positive length."""
    lengths = dict(DEFAULT_CONTEXT_LENGTHS)
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip().isdigit() or int(value) <= 0:
            raise ValueError(f"expected MODEL=TOKENS with TOKENS a whole number > 0, got {item!r}")
        lengths[name.strip()] = int(value)
    return lengths
