"""``python -m gigachat_emulator``: the same as the ``llm-gigachat-emulator`` console script."""

from __future__ import annotations

import sys

from gigachat_emulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
