"""``python -m llmctl``: the same as the ``llmctl`` console script."""

from llmctl.cli import main

raise SystemExit(main())
