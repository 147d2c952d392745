"""Runs one emulator process: bind, announce, wait for SIGTERM/SIGINT, stop cleanly.

Signals are blocked in every thread and collected with ``sigwait`` in the main thread, so no signal
handler runs at all (docs/architecture.md, "Conventions"): the main thread turns the signal into ``stop``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

from gigachat_emulator.app import Emulator
from gigachat_emulator.config import FaultConfig
from gigachat_emulator.server import EmulatorHTTPServer
from gigachat_emulator.state import EmulatorState, ServerOptions

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CANNOT_LISTEN = 3
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
_DRAIN_TIMEOUT_S = 3.0


def run(options: ServerOptions, config: FaultConfig) -> int:
    """Serve until SIGTERM or SIGINT; return the process exit code. Must run in the main thread."""
    # A parent may have left SIGTERM ignored; blocked-and-ignored signals are discarded, not queued.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    ready_file = Path(options.ready_file) if options.ready_file else None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # a stale file from an earlier run must not look ready
    state = EmulatorState.create(options, config)
    try:
        server = EmulatorHTTPServer((options.host, options.port), Emulator(state))
    except OSError as exc:
        logger.error("Cannot listen on %s:%d: %s", options.host, options.port, exc)
        return EXIT_CANNOT_LISTEN
    acceptor = threading.Thread(target=server.serve_forever, name="http-accept", daemon=True)
    acceptor.start()
    _announce(options.host, server.port, ready_file)
    received = signal.sigwait(_STOP_SIGNALS)
    logger.info("Received %s, stopping", signal.Signals(received).name)
    _stop(server, state, acceptor)
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)
    return EXIT_OK


def _announce(host: str, port: int, ready_file: Path | None) -> None:
    print(f"GigaChat emulator listening on http://{host}:{port}", flush=True)
    if ready_file is not None:
        # Write-then-rename: a launcher polling for the file never reads a half-written port.
        partial = ready_file.with_name(f".{ready_file.name}.{os.getpid()}.tmp")
        partial.write_text(f"{port}\n", encoding="ascii")
        partial.replace(ready_file)


def _stop(server: EmulatorHTTPServer, state: EmulatorState, acceptor: threading.Thread) -> None:
    """Stop accepting, wake sleeping and hung calls (they answer 503), give them a moment, close."""
    state.stopping.set()
    server.shutdown()
    acceptor.join(timeout=_DRAIN_TIMEOUT_S)
    if not server.app.wait_idle(_DRAIN_TIMEOUT_S):
        logger.warning("Calls still in flight after %.1fs; closing anyway", _DRAIN_TIMEOUT_S)
    server.server_close()
    logger.info("Stopped")
