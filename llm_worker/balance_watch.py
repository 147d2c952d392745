"""Reads GET /balance every GIGACHAT_BALANCE_INTERVAL_S, one worker of the host at a time.

A daemon thread in each worker; the turn is claimed under the spending files' flock
(llm_worker/spending.py), so the host sends one request per interval however many workers run. The
reading goes to ``balance.json``, where the supervisor shows it (``model_balance_tokens``, alert
``model_balance_low``). An account without prepaid packages (403) is stored as such and read again
only every interval, in case packages are bought.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from llm_service.errors import TaskError
from llm_worker.spending import SpendingFiles

log = logging.getLogger(__name__)

CHECK_EVERY_S = 5.0  # how often a worker looks whether the host's turn to read has come


class BalanceWatch:
    def __init__(
        self,
        *,
        files: SpendingFiles,
        read: Callable[[], dict[str, float] | None],
        interval_s: float,
        stop: threading.Event,
    ) -> None:
        self._files = files
        self._read = read
        self._interval_s = interval_s
        self._stop = stop

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self._run, name="balance", daemon=True)
        thread.start()
        return thread

    def poll_once(self) -> None:
        if not self._files.claim_balance(interval_s=self._interval_s):
            return
        try:
            packages = self._read()
        except TaskError as exc:
            log.warning("GigaChat balance not read: %s", exc)
            return
        self._files.balance_read(packages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # the thread's boundary: a bug must be seen, not end the readings silently
                log.exception("Reading the GigaChat balance failed")
            self._stop.wait(min(CHECK_EVERY_S, self._interval_s))
