"""Run a real ``llm-supervisor`` for a test: own process group, log in a file, teardown TERM then KILL.

Nothing here sleeps to synchronise; every wait polls a condition until a deadline.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

from llmctl.control import Unreachable, request
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
FAKE_ENTRY = "tests.supervisor.fake_worker:run"

# The worker fields every `status` reply must carry (docs/reference.md, "Status socket").
CONTRACT_WORKER_FIELDS = frozenset(
    {
        "slot",
        "pid",
        "state",
        "restarts",
        "in_flight",
        "done",
        "failed",
        "tokens_used",
        "cpu_percent",
        "rss_mb",
        "heartbeat_age_s",
    }
)


class Supervisor:
    """One ``llm-supervisor`` process (the installed console script) and its socket."""

    def __init__(
        self,
        *,
        env: dict[str, str],
        tmp_path: Path,
        fake: bool = True,
        env_file: Path | None = None,
        env_text: str | None = None,
        name: str = "supervisor",
    ) -> None:
        if env_text is not None:  # the --env-file, written for this supervisor
            env_file = tmp_path / f"{name}.env"
            env_file.write_text(env_text)
        self.env_file = env_file
        self.socket = str(tmp_path / f"{name}.sock")
        self.log_path = tmp_path / f"{name}.log"
        self.env = {**env, "SUPERVISOR_SOCKET": self.socket, "PYTHONPATH": str(REPO)}
        self.env.setdefault("SUPERVISOR_LAG_INTERVAL_S", "0")
        argv = [shutil.which("llm-supervisor") or "llm-supervisor"]
        if env_file is not None:
            argv += ["--env-file", str(env_file)]
        if fake:
            argv += ["--worker-entry", FAKE_ENTRY]
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            argv,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=tmp_path,
        )

    def rewrite_env(self, text: str) -> None:
        """Replace the contents of the --env-file it was started with (before a reload)."""
        assert self.env_file is not None, "started without an env file"
        self.env_file.write_text(text)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def llmctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """The installed ``llmctl ARGS --socket <ours>``, output as text; the caller judges the exit code."""
        return subprocess.run(
            ["llmctl", *args, "--socket", self.socket],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
            check=False,
        )

    def ask(self, cmd: str, **args: Any) -> dict[str, Any]:
        return request(self.socket, cmd, **args)

    def status(self) -> dict[str, Any] | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"supervisor exited ({self.proc.returncode}):\n{self.log_text()[-3000:]}")
        try:
            return self.ask("status")
        except Unreachable:
            return None

    def workers(self) -> list[dict[str, Any]]:
        reply = self.status()
        return reply["workers"] if reply else []

    def running(self, n: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            rows = self.workers()
            ok = len(rows) == n and all(w["state"] == "RUNNING" for w in rows)
            return rows if ok else None

        rows: list[dict[str, Any]] = wait_until(ready, timeout=timeout, what=f"{n} RUNNING workers")
        return rows

    def signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def wait_exit(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int | None:
        """Teardown: SIGTERM the supervisor, SIGKILL its process group after ``timeout``."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode
