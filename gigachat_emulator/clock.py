"""The wall clock behind a seam, so token expiry is tested with a fake clock instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Source of Unix time in seconds."""

    def now(self) -> float:
        """Return the current Unix time in seconds."""
        ...


class SystemClock:
    """The real clock (``time.time``)."""

    def now(self) -> float:
        """Return the current Unix time in seconds."""
        return time.time()
