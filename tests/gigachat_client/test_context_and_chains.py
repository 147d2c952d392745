"""Per-model settings (fallback chains, context lengths) and the context guard's counting and cache."""

from __future__ import annotations

import pytest

from llm_service.config import load_settings
from llm_service.errors import ConfigError, PermanentTaskError
from llm_service.model_settings import parse_context_lengths, parse_fallback_models
from llm_worker.gigachat.context import ContextGuard


def test_fallback_chains_parse_and_bad_ones_fail_on_load_with_one_line() -> None:
    chains = parse_fallback_models("GigaChat-2-Max=GigaChat-2-Pro,GigaChat-2; GigaChat=GigaChat-2")
    assert chains == {"GigaChat-2-Max": ("GigaChat-2-Pro", "GigaChat-2"), "GigaChat": ("GigaChat-2",)}
    for bad in ("A", "A=", "A=B;A=C", "A=A", "A=B,B"):
        with pytest.raises(ConfigError) as caught:
            load_settings({"GIGACHAT_FALLBACK_MODELS": bad})
        assert str(caught.value).startswith("GIGACHAT_FALLBACK_MODELS=") and "\n" not in str(caught.value)


def test_context_lengths_override_the_defaults_and_bad_ones_fail_on_load() -> None:
    lengths = parse_context_lengths("GigaChat=32768,My-Model=1000")
    assert lengths["GigaChat"] == 32768 and lengths["My-Model"] == 1000
    assert lengths["GigaChat-2-Max"] == 131072  # a default kept
    for bad in ("GigaChat", "GigaChat=0", "GigaChat=-5", "GigaChat=1e5"):
        with pytest.raises(ConfigError):
            load_settings({"GIGACHAT_CONTEXT_LENGTHS": bad})


class Counter:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[int]:
        self.calls.append(texts)
        return [len(t.split()) for t in texts]  # one token per word, for the test


def test_short_inputs_are_not_counted_long_ones_once_and_over_long_ones_fail_with_the_counts() -> None:
    guard = ContextGuard(lengths={"M": 50})
    count = Counter()
    guard.check("M", [{"role": "user", "content": "x" * 50}], count=count)  # 50 bytes: cannot exceed
    assert count.calls == []
    fits = [{"role": "user", "content": "word " * 40}]  # 200 bytes, 40 tokens
    guard.check("M", fits, count=count)
    guard.check("M", fits, count=count)  # cached per text hash
    assert len(count.calls) == 1
    guard.check("Unknown", [{"role": "user", "content": "w " * 500}], count=count)  # no length: no check
    assert len(count.calls) == 1

    with pytest.raises(PermanentTaskError) as caught:
        guard.check("M", [{"role": "system", "content": "be brief " * 6}, *fits], count=count)
    assert caught.value.code == "INPUT_TOO_LONG"
    assert "the input is 52 tokens, over the context length of M (50 tokens)" in str(caught.value)
    assert count.calls[-1] == ["be brief " * 6]  # only the new text was counted


def test_the_cache_is_bounded() -> None:
    guard = ContextGuard(lengths={"M": 1}, entries=2)
    count = Counter()
    for text in ("aa bb", "cc dd", "ee ff", "aa bb"):
        with pytest.raises(PermanentTaskError):
            guard.check("M", [{"role": "user", "content": text}], count=count)
    assert [c[0] for c in count.calls] == ["aa bb", "cc dd", "ee ff", "aa bb"]  # the oldest was evicted
