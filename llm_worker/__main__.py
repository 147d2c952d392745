"""``python -m llm_worker``: the same as the ``llm-worker`` console script."""

from llm_worker.cli import main

raise SystemExit(main())
