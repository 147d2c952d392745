"""A local HTTP emulator of the GigaChat REST API (v1 chat, OAuth, files, models, tokens).

The emulator is a test double: it runs as its own process (``llm-gigachat-emulator``) and answers the
documented GigaChat endpoints with deterministic content, plus a control API under ``/_emulator/`` that
tests and operators use to inject latency and faults and to read the call log.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
