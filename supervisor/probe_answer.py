"""The one JSON line a probe child process prints for the supervisor (lag_probe, instance_probe).

Runs in the probe's own short-lived process (``python -m supervisor.<name>_probe``), started by the
supervisor so that Kafka clients never live in the supervisor. Whatever happens, the supervisor
reads exactly one JSON line: the result, or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


def answer(probe: Callable[[], dict[str, Any]], expected: tuple[type[Exception], ...]) -> int:
    """Run ``probe`` and print its result as one JSON line; an error becomes ``{"error": ...}``; exit 0."""
    try:
        result = probe()
    except expected as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    except Exception as exc:  # the process boundary: the supervisor gets one line, never a traceback
        result = {"error": f"unexpected {type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0
