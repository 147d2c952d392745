"""Numbers read from JSON the worker does not control (GigaChat's answers, the host's spending files).

``json`` hands back Python ints of any size, ``NaN`` and ``Infinity``, and booleans (which are ints):
none of them may reach arithmetic or a comparison that decides a budget or a wait.
"""

from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> float | None:
    """``value`` as a finite float; None for anything else (a string, a bool, NaN, an integer too
    large for a float)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None
