"""Code shared by every process of llm-service: settings, logging and the names users see.

Nothing in this package opens a connection or starts a thread at import time, so the supervisor
can import it before forking workers.
"""

__version__ = "0.1.0"
