"""The submit tests reuse the worker tests' testbed (topics, worker processes, status log)."""

from __future__ import annotations

from tests.worker.conftest import bed

__all__ = ["bed"]
