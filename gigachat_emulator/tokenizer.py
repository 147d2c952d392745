"""The one token counter used for ``/tokens/count``, chat usage and ``max_tokens`` truncation.

Not GigaChat's tokenizer (that one is not public): a token is a run of up to 6 word characters or one
punctuation mark, so a long word costs one token per started 6 characters. It gives plausible numbers and
matches the recorded example ``"Hello, world!"`` -> 4 tokens, 13 characters (fact sheet §4).
"""

from __future__ import annotations

import re

# The regex yields exactly one match per token; counting matches keeps this cheap on every chat call.
_TOKEN = re.compile(r"\w{1,6}|[^\w\s]")


def count_tokens(text: str) -> int:
    """Return the number of tokens in ``text``."""
    return len(_TOKEN.findall(text))


def truncate_to_tokens(text: str, limit: int) -> str:
    """Return the longest prefix of ``text`` ending on a token boundary with at most ``limit`` tokens."""
    end = 0
    for index, match in enumerate(_TOKEN.finditer(text)):
        if index >= limit:
            break
        end = match.end()
    return text[:end]
