"""Refuse a chat call that cannot fit the model's context, before anything is billed.

A byte-level tokenizer never makes more tokens than the text has UTF-8 bytes, so an input of at most
the context length in bytes is sent without counting: short tasks cost no extra call. A longer one is
counted with ``POST /tokens/count`` (free, not a generation), and the count is cached per text hash
in a bounded LRU so a retried or re-delivered task is not counted twice.

Who uses it: GigaChatClient.chat, for each model it is about to call (a fallback model may have a
different context length).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from llm_service.errors import PermanentTaskError
from llm_worker.gigachat.models import INPUT_TOO_LONG

CACHE_ENTRIES = 1024

# texts -> tokens of each text, as POST /tokens/count answers for the model being checked.
Counter = Callable[[list[str]], list[int]]


class ContextGuard:
    """Per-model context lengths and a token-count cache; thread-safe."""

    def __init__(self, *, lengths: Mapping[str, int], entries: int = CACHE_ENTRIES) -> None:
        self._lengths = dict(lengths)
        self._entries = entries
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, int] = OrderedDict()

    def check(self, model: str, messages: list[dict[str, Any]], *, count: Counter) -> None:
        """Raise PermanentTaskError(INPUT_TOO_LONG) with the counts when the messages exceed the context.

        A model without a known context length is not checked (its 413 still maps to INPUT_TOO_LONG).
        """
        limit = self._lengths.get(model)
        if limit is None:
            return
        texts = [m["content"] for m in messages if isinstance(m.get("content"), str) and m["content"]]
        if sum(len(t.encode("utf-8")) for t in texts) <= limit:
            return
        tokens = self._tokens(model, texts, count)
        if tokens > limit:
            raise PermanentTaskError(
                f"the input is {tokens} tokens, over the context length of {model} ({limit} tokens); "
                "not sent to the model",
                code=INPUT_TOO_LONG,
            )

    def _tokens(self, model: str, texts: list[str], count: Counter) -> int:
        keys = [hashlib.sha256(f"{model}\n{t}".encode()).hexdigest() for t in texts]
        with self._lock:
            known = {k: self._cache[k] for k in keys if k in self._cache}
            for key in known:
                self._cache.move_to_end(key)
        missing = [(k, t) for k, t in zip(keys, texts, strict=True) if k not in known]
        if missing:
            counts = count([t for _, t in missing])
            with self._lock:
                for (key, _), tokens in zip(missing, counts, strict=True):
                    known[key] = tokens
                    self._cache[key] = tokens
                while len(self._cache) > self._entries:
                    self._cache.popitem(last=False)
        return sum(known[k] for k in keys)
