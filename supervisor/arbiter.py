"""The supervisor's main loop: wait for an event, then take each step in turn.

Runs in the supervisor process, single-threaded. One ``selectors`` loop serves the signal wakeup
pipe, the status socket and the lag probe's pipe; each turn of the loop is the list of steps in
:meth:`Arbiter.turn`. Signals arrive as notes (:mod:`supervisor.signals`) and become calls to named
methods here; the pool (:mod:`supervisor.pool`) makes the decisions about processes.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import selectors
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llm_service.config import Settings
from llm_service.errors import ConfigError
from llm_service.logs import configure_logging_from, log_settings_changed, reopen_log_files
from llm_service.proctitle import set_supervisor_title
from llm_service.socket_protocol import Request, error_reply
from llm_service.status_table import SlotSnapshot, StatusTable
from supervisor import status as status_view
from supervisor.budget import BudgetWatch, budget_alerts
from supervisor.control_socket import ControlServer
from supervisor.health import AlertBook, ErrorRate, HealthInputs, find_alerts
from supervisor.lag import LagMonitor
from supervisor.lifecycle import Life, LifeState
from supervisor.limits import (
    HostReading,
    LoadTracker,
    Meter,
    PoolLoad,
    Shed,
    WorkerAction,
    decide_pool,
    decide_worker,
    shed_cap,
)
from supervisor.metrics import Exporter, MetricsView, WorkerView
from supervisor.metrics_server import MetricsServer
from supervisor.pool import Pool
from supervisor.reconfig import FIXED_AT_START, Change, compare
from supervisor.sdnotify import Notifier, monotonic_usec
from supervisor.signals import SignalNotes
from supervisor.slot import SlotState, StopReason
from supervisor.spawn import Clock, ProcessOps

log = logging.getLogger(__name__)

# The loop sleeps until the next thing due: a load sample (SAMPLE_S), a worker's heartbeat deadline,
# a retry or stop deadline, the watchdog; signals (SIGCHLD too) and sockets wake it at once. Only a
# change nobody signals is polled for, every TICK_S: a starting worker reporting RUNNING, a stop.
TICK_S = 0.25
SAMPLE_S = 2.0  # the CPU, RAM and disk sample for the limit windows: most of an idle loop's cost (issue 9)
HEARTBEAT_SLACK_S = 0.01  # wake just past a heartbeat deadline: "silent longer than" needs time to pass
DUE_SLACK_S = 0.002  # a wake this close to the due time counts as reaching it (select rounds to 1 ms)


@dataclass(frozen=True, kw_only=True)
class Command:
    """One status socket command: what it runs, and whether it changes anything the loop's steps act on."""

    run: Callable[[Request], dict[str, Any]]
    acts: bool


@dataclass(kw_only=True)
class Parts:
    """The arbiter's collaborators, made by :mod:`supervisor.cli` (or by tests, with fakes)."""

    table: StatusTable
    ops: ProcessOps
    clock: Clock
    meter: Meter
    notifier: Notifier
    load_settings: Callable[[], Settings]
    hostname: str
    rand: Callable[[], float]
    selector: selectors.BaseSelector
    lag: LagMonitor | None = None


class Arbiter:
    """Owns the loop, the signals and the socket; asks the pool to act."""

    def __init__(self, *, settings: Settings, parts: Parts) -> None:
        self.settings = settings
        self._p = parts
        self._clock = parts.clock
        self._signals = SignalNotes()
        self.pool = Pool(
            settings=settings,
            table=parts.table,
            ops=parts.ops,
            clock=parts.clock,
            hostname=parts.hostname,
            rand=parts.rand,
            in_child=self._close_in_child,
        )
        self._server = ControlServer(
            path=settings.supervisor_socket, selector=parts.selector, handler=self.handle_request
        )
        self._metrics = (
            MetricsServer(
                addr=settings.metrics_addr,
                port=settings.metrics_port,
                selector=parts.selector,
                render=Exporter(view=self.metrics_view).render,
            )
            if settings.metrics_port
            else None
        )
        self._load = LoadTracker(meter=parts.meter, window_s=settings.limit_window_s)
        self._pool_load = PoolLoad(shed=Shed.NONE, disk_low=False, reason="")
        self._alerts = AlertBook()
        self._budget = BudgetWatch(settings=settings)
        self._errors = ErrorRate()
        self._snapshots: dict[int, SlotSnapshot] = {}
        self._operator_paused = False
        self._life = Life()
        self._commands = self._command_table()
        self._acted = False  # a command that changes something ran during the last wait
        self._next_sample = parts.clock.monotonic() + SAMPLE_S  # psutil's first CPU reading needs a gap
        self._stop_deadline = 0.0
        self._title = ""
        self._started = parts.clock.monotonic()
        self._started_wall = parts.clock.wall()

    # --- life cycle --------------------------------------------------------------------------------

    def run(self) -> int:
        """Start the pool, loop until stopped, clean up. Returns the supervisor's exit code."""
        self.start()
        try:
            while not self.finished():
                self.turn()
        finally:
            self.close()
        return 1 if self.pool.unclean_stop else 0

    def start(self) -> None:
        self._signals.install()
        self._p.selector.register(
            self._signals.fileno(), selectors.EVENT_READ, lambda mask: self._signals.drain()
        )
        self._server.open()
        self._open_metrics()
        log.info(
            "Supervisor %d starting %d worker(s); status socket %s",
            os.getpid(),
            self.pool.wanted,
            self._server.path,
        )
        self.pool.fill()

    def turn(self, *, wait: bool = True) -> None:
        """One loop turn: each step is one call; none of them blocks.

        ``wait=False`` (the tests, with a fake clock) runs the steps at once. After a wait that only
        answered read-only requests (``status``, ``health``, a metrics scrape) before anything fell due,
        the steps are skipped: none has anything new to act on, and a status client polling once a
        second would otherwise pay for a full turn on each of its connect, request and hang-up.
        """
        if wait and not self.wait_for_events():
            return
        self.handle_signals()
        self.reap_children()
        self.watch_workers()
        self.apply_limits()
        self.maintain_pool()
        self.assess_health()
        self.report()

    def _open_metrics(self) -> None:
        if self._metrics is None:
            return
        try:
            self._metrics.open()
        except OSError as exc:
            self._server.close()
            raise ConfigError(
                f"METRICS_PORT={self.settings.metrics_port}: cannot listen on "
                f"{self.settings.metrics_addr}: {exc.strerror or exc}"
            ) from None
        log.info("Metrics at http://%s:%d/metrics", self._metrics.addr, self._metrics.port)

    def finished(self) -> bool:
        return self._life.stopping and self.pool.all_down()

    def close(self) -> None:
        self._server.close()
        if self._metrics is not None:
            self._metrics.close()
        if self._p.lag is not None:
            self._p.lag.close()
        self._signals.uninstall()
        self._signals.close()
        self._p.notifier.close()
        log.info("Supervisor stopped%s", " (some workers had to be killed)" if self.pool.unclean_stop else "")

    def _close_in_child(self) -> None:
        """Runs in a freshly forked worker: drop every file the supervisor owns (socket, pipes, selector)."""
        self._server.close_in_child()
        if self._metrics is not None:
            self._metrics.close_in_child()
        if self._p.lag is not None:
            self._p.lag.close_in_child()
        self._signals.close()
        self._p.selector.close()  # closes the fd only; unregister() would edit the parent's epoll set
        self._p.notifier.close()

    # --- the loop's steps --------------------------------------------------------------------------

    def wait_for_events(self) -> bool:
        """Sleep until an event or the next thing due. True when the steps have work: a signal, a
        command that acts (scale, drain, resume, reload) or a deadline reached."""
        due = self._clock.monotonic() + self._timeout()
        self._acted = False
        for key, mask in self._p.selector.select(max(0.0, due - self._clock.monotonic())):
            key.data(mask)
        return self._acted or self._signals.pending() or self._clock.monotonic() >= due - DUE_SLACK_S

    def _timeout(self) -> float:
        now = self._clock.monotonic()
        due = [self._next_sample, *self._heartbeat_deadlines()]
        if self._life.stopping or any(s.state is SlotState.STARTING for s in self.pool.slots):
            due.append(now + TICK_S)
        due += [s.retry_at for s in self.pool.slots if s.state in (SlotState.BACKOFF, SlotState.FATAL)]
        due += [s.deadline for s in self.pool.slots if s.state in (SlotState.DRAINING, SlotState.STOPPING)]
        watchdog = self._p.notifier.next_due()
        if watchdog is not None:
            due.append(watchdog)
        lag = (
            self._p.lag.next_due(self.settings)
            if self._p.lag is not None and not self._life.stopping
            else None
        )
        if lag is not None:
            due.append(lag)
        return max(0.0, min(due) - now)

    def _heartbeat_deadlines(self) -> list[float]:
        """When each watched worker would be silent too long, judged by its last reading (or sooner)."""
        timeout = self.settings.worker_heartbeat_timeout + HEARTBEAT_SLACK_S
        deadlines = []
        for slot in self.pool.slots:
            if slot.state in (SlotState.STARTING, SlotState.RUNNING, SlotState.DRAINING):
                snap = self._snapshots.get(slot.index)
                beat = snap.heartbeat if snap is not None and snap.pid == slot.pid else 0.0
                deadlines.append(max(beat, slot.spawned_at) + timeout)
        return deadlines

    def handle_signals(self) -> None:
        if not self._signals.pending():
            return  # the common turn: no read of an empty pipe (an exception each time)
        for sig in self._signals.pop():
            self._on_signal(sig)

    def _on_signal(self, sig: int) -> None:
        if sig == signal.SIGHUP:
            self.reload("SIGHUP")
        elif sig in (signal.SIGTERM, signal.SIGINT):
            self.stop(fast=False, why=signal.Signals(sig).name)
        elif sig == signal.SIGQUIT:
            self.stop(fast=True, why="SIGQUIT")
        elif sig == signal.SIGTTIN:
            self.scale(self.pool.wanted + 1, why="SIGTTIN")
        elif sig == signal.SIGTTOU:
            self.scale(max(1, self.pool.wanted - 1), why="SIGTTOU")
        elif sig == signal.SIGUSR1:
            self.reopen_logs()

    def reap_children(self) -> None:
        """waitpid(-1): our workers, the lag probe, and any orphan handed to us as PID 1."""
        for pid, status in self._p.ops.reap():
            self._load.forget(pid)
            if self.pool.on_exit(pid, status):
                continue
            if self._p.lag is not None and self._p.lag.owns(pid):
                self._p.lag.on_exit(pid, status)
                continue
            log.info("Reaped orphan process %d (status %d)", pid, status)

    def watch_workers(self) -> None:
        self._snapshots = self.pool.read()
        self.pool.observe(self._snapshots)
        self.pool.check_heartbeats(self._snapshots)
        self.pool.escalate()
        self._errors.add(self._clock.monotonic(), list(self._snapshots.values()))
        if self._life.stopping and self._clock.monotonic() >= self._stop_deadline > 0:
            log.warning(
                "Stop deadline passed (step 2 of 2): killing %d worker(s) still running",
                len(self.pool.live_slots()),
            )
            self._stop_deadline = 0.0

    def apply_limits(self) -> None:
        now = self._clock.monotonic()
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_S
            self._load.sample(now, self.pool.pids())
            self._shed_load()
            self._police_workers()
        self.pool.set_control(
            intake_paused=self._operator_paused or self._pool_load.intake_paused,
            concurrency_cap=shed_cap(self.settings, self._pool_load.shed),
        )

    def _judged_host(self) -> HostReading:
        """Host averages for decisions and alerts. Disk needs no window; CPU and RAM wait until it fills."""
        host = self._load.host()
        return host if self._load.warm() else dataclasses.replace(host, cpu_percent=0.0, ram_percent=0.0)

    def _shed_load(self) -> None:
        load = decide_pool(self.settings, self._judged_host())
        if (load.shed, load.disk_low) != (self._pool_load.shed, self._pool_load.disk_low):
            log.warning(
                "Load shedding now %s%s%s",
                load.shed.name,
                ", disk low" if load.disk_low else "",
                f" ({load.reason})" if load.reason else "",
            )
        self._pool_load = load

    def _police_workers(self) -> None:
        for slot in self.pool.slots:
            if slot.state is not SlotState.RUNNING:
                continue
            snap = self._snapshots.get(slot.index)
            done = snap.done + snap.failed if snap is not None and snap.pid == slot.pid else 0
            action, why = decide_worker(
                self.settings, self._load.process(slot.pid), tasks_done=done, max_tasks=slot.max_tasks
            )
            if action is WorkerAction.KILL:
                log.error("Worker %d (pid %d) killed: %s", slot.index, slot.pid, why)
                self.pool.force(slot, StopReason.RSS_HARD)
            elif action is WorkerAction.RECYCLE:
                log.warning("Worker %d (pid %d) recycled: %s", slot.index, slot.pid, why)
                self.pool.drain(slot, StopReason.RECYCLE)

    def maintain_pool(self) -> None:
        self.pool.trim()
        self.pool.fill()
        if self._life.state is LifeState.RELOADING and self.pool.roll():
            self._life.move(LifeState.RUNNING)
            log.info("Rolling restart finished: every worker runs the new config")
            self._p.notifier.ready(self._status_line())

    def assess_health(self) -> None:
        lag = self._p.lag
        inputs = HealthInputs(
            states=[s.state for s in self.pool.wanted_slots()],
            snapshots=self._own_snapshots(),
            host=self._judged_host(),
            kafka_errors_per_min=self._errors.per_minute(),
            lag_s=self._lag_s(),
            intake_paused_by_operator=self._operator_paused,
            boot_failures=max((s.boot_failures for s in self.pool.wanted_slots()), default=0),
            conflicts=tuple(
                s.group_instance_id for s in self.pool.wanted_slots() if s.state is SlotState.CONFLICT
            ),
        )
        found = find_alerts(self.settings, inputs)
        found.update(budget_alerts(self._budget.report()))
        self._alerts.update(found, self._clock.wall())
        if lag is not None and not self._life.stopping:
            lag.tick(self.settings, self._clock.monotonic())

    def _own_snapshots(self) -> list[SlotSnapshot]:
        pids = {s.index: s.pid for s in self.pool.slots}
        return [snap for i, snap in self._snapshots.items() if snap.pid == pids[i]]

    def _lag_s(self) -> float | None:
        wall = self._clock.wall()
        pending = [wall - s.oldest_pending_ts for s in self._own_snapshots() if s.oldest_pending_ts]
        probe = self._p.lag.lag_s if self._p.lag is not None else None
        values = pending + ([probe] if probe is not None else [])
        return max(values) if values else None

    def report(self) -> None:
        """systemd readiness and watchdog, and the process title."""
        if self._life.state is LifeState.STARTING and self._pool_is_up():
            self._life.move(LifeState.RUNNING)
            log.info("Supervisor ready: %d worker(s) running", self._running_count())
            self._p.notifier.ready(self._status_line())
        self._p.notifier.watchdog(self._clock.monotonic())
        title = self._status_line()
        if title != self._title:
            self._title = title
            self._p.notifier.status(title)
            set_supervisor_title(
                workers=self._running_count(),
                health=self._alerts.health(),
                note=self._life.state.note,
            )

    def _pool_is_up(self) -> bool:
        return all(s.state not in (SlotState.STARTING, SlotState.STOPPED) for s in self.pool.wanted_slots())

    def _running_count(self) -> int:
        return sum(1 for s in self.pool.slots if s.state is SlotState.RUNNING)

    def _status_line(self) -> str:
        return f"{self._running_count()}/{self.pool.wanted} workers running, {self._alerts.health()}"

    # --- commands (signals and the status socket) -------------------------------------------------

    def reload(self, why: str) -> dict[str, Any]:
        """Re-read and validate the config; keep the old one on any error; roll workers if needed.

        The door for ``.env`` contents (SIGHUP, ``llmctl reload``): every outcome is either "accepted"
        or "rejected, old config kept" with one log line saying why; nothing escapes into the loop.
        """
        if self._life.stopping:
            log.warning("Reload (%s) ignored: the supervisor is stopping", why)
            return error_reply("the supervisor is stopping")
        self._p.notifier.reloading(monotonic_usec())
        old = self.settings
        try:
            change = self._load_and_apply()
        except ConfigError as exc:
            return self._reject(why, str(exc))
        except Exception as exc:
            log.exception("Reload (%s) failed unexpectedly", why)
            self._restore(old)
            return self._reject(why, f"unexpected error: {type(exc).__name__}: {exc}")
        if change.needs_supervisor_restart:
            log.warning(
                "Reload: %s take effect only after a supervisor restart",
                ", ".join(change.needs_supervisor_restart),
            )
        if change.needs_rolling_restart:
            self.pool.start_rolling()
            if self._life.state is not LifeState.RELOADING:
                self._life.move(LifeState.RELOADING)
        elif self._life.state is LifeState.RUNNING:  # starting or mid-roll: READY comes when that ends
            self._p.notifier.ready(self._status_line())
        log.info(
            "Reload (%s) accepted: %s%s",
            why,
            ", ".join(change.changed) or "nothing changed",
            "; replacing workers one at a time" if change.needs_rolling_restart else "",
        )
        return {"ok": True, "changed": list(change.changed), "rolling_restart": change.needs_rolling_restart}

    def _reject(self, why: str, reason: str) -> dict[str, Any]:
        log.error("Reload (%s) rejected, keeping the old config: %s", why, reason)
        self._p.notifier.ready(self._status_line())
        return error_reply(f"config rejected, old config kept: {reason}")

    def _load_and_apply(self) -> Change:
        """Load, refuse what a reload cannot do, then apply; raises ConfigError before changing anything."""
        new = self._p.load_settings()
        change = compare(self.settings, new)
        if change.refused:
            raise ConfigError(
                f"{', '.join(change.refused)} cannot change on reload (old and new workers would consume "
                "side by side during the rolling restart); restart the supervisor to change it"
            )
        fixed_max = self.settings.worker_max_processes  # sizes the status table: fixed at start
        if new.worker_processes > fixed_max:
            raise ConfigError(
                f"WORKER_PROCESSES={new.worker_processes} exceeds WORKER_MAX_PROCESSES={fixed_max}, "
                "which is fixed at start"
            )
        self._apply(new, change.changed)
        return change

    def _apply(self, new: Settings, changed: tuple[str, ...]) -> None:
        """Swap in ``new``. Only the first step (opening LOG_FILE) can fail, and it changes nothing then."""
        new = dataclasses.replace(new, **{name: getattr(self.settings, name) for name in FIXED_AT_START})
        if log_settings_changed(changed):
            try:
                configure_logging_from(new, service="llm-supervisor")
            except OSError as exc:
                raise ConfigError(f"LOG_FILE={new.log_file!r}: cannot open: {exc.strerror}") from None
        self.settings = new
        self.pool.settings = new
        self._budget = BudgetWatch(settings=new)  # a raised budget shows (and clears its alert) at once
        self._load.set_window(new.limit_window_s)
        if "WORKER_PROCESSES" in changed:
            self.pool.resize(new.worker_processes)
        self.pool.retry_failed_now()

    def _restore(self, old: Settings) -> None:
        """After an unexpected error mid-apply: the old settings back everywhere they were copied."""
        self.settings = old
        self.pool.settings = old
        self._load.set_window(old.limit_window_s)

    def stop(self, *, fast: bool, why: str) -> None:
        """Step 1: SIGTERM (SIGQUIT when fast) to all workers, one deadline. Called again: step 2, SIGKILL."""
        if self._life.stopping:
            log.warning(
                "%s again: forcing the stop (step 2 of 2): SIGKILL to %d worker(s)",
                why,
                len(self.pool.live_slots()),
            )
            self.pool.kill_all()
            return
        self._life.move(LifeState.FAST_STOP if fast else LifeState.STOPPING)
        budget = self.settings.worker_kill_grace_s if fast else self.settings.worker_drain_timeout
        self._stop_deadline = self._clock.monotonic() + budget + self.settings.supervisor_stop_margin_s
        log.info(
            "%s: %s (step 1 of 2): %s to %d worker(s); SIGKILL for the rest in %.0f s",
            why,
            "fast stop" if fast else "graceful stop",
            "SIGQUIT" if fast else "SIGTERM",
            len(self.pool.live_slots()),
            self._stop_deadline - self._clock.monotonic(),
        )
        self._p.notifier.stopping(f"{self._life.state.value}: {why}")
        self.pool.stop_all(fast=fast, deadline=self._stop_deadline)

    def scale(self, n: int, *, why: str) -> dict[str, Any]:
        if self._life.stopping:
            return error_reply("the supervisor is stopping")
        if n > len(self.pool.slots):
            return error_reply(f"at most {len(self.pool.slots)} workers (WORKER_MAX_PROCESSES)")
        before = self.pool.wanted
        self.pool.resize(n)
        log.info("Pool size %d -> %d (%s)", before, n, why)
        return {"ok": True, "workers": n}

    def reopen_logs(self) -> None:
        reopen_log_files()
        for pid in self.pool.pids():
            self._p.ops.kill(pid, signal.SIGUSR1)
        log.info("Log files reopened (SIGUSR1); forwarded to %d worker(s)", len(self.pool.pids()))

    def set_intake(self, *, paused: bool) -> dict[str, Any]:
        self._operator_paused = paused
        log.warning("Intake %s by llmctl", "paused" if paused else "resumed")
        return {"ok": True, "intake_paused": paused}

    def _command_table(self) -> dict[str, Command]:
        """The status socket's commands (parsed by llm_service/socket_protocol.py), each with its action."""
        return {
            "status": Command(run=lambda r: self.status(), acts=False),
            "health": Command(run=lambda r: self.health(), acts=False),
            "reload": Command(run=lambda r: self.reload("llmctl"), acts=True),
            "scale": Command(run=self._scale_request, acts=True),
            "drain": Command(run=lambda r: self.set_intake(paused=True), acts=True),
            "resume": Command(run=lambda r: self.set_intake(paused=False), acts=True),
        }

    def handle_request(self, request: Request) -> dict[str, Any]:
        """The status socket's commands; called from the loop when a request line arrives."""
        command = self._commands.get(request.cmd)
        if command is None:  # parse_request refuses it first; this answers the same for a direct caller
            return error_reply(f"unknown cmd {request.cmd[:40]!r}; one of {', '.join(self._commands)}")
        self._acted = self._acted or command.acts
        return command.run(request)

    def _scale_request(self, request: Request) -> dict[str, Any]:
        if request.n is None:  # parse_request requires it; a direct caller may leave it out
            return error_reply('scale needs "n", a whole number of workers >= 0')
        return self.scale(request.n, why="llmctl")

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "health": self._alerts.health(),
            "alerts": [a.as_dict() for a in self._alerts.alerts()],
        }

    def status(self) -> dict[str, Any]:
        now, wall = self._clock.monotonic(), self._clock.wall()
        snaps = self.pool.read()
        shown = [s for s in self.pool.slots if s.index < self.pool.wanted or s.live]
        workers = [
            status_view.worker_entry(s, snaps.get(s.index), self._load.process(s.pid), now=now, wall=wall)
            | {"record_stale": s.index in self.pool.stale}  # its last good reading is shown
            for s in shown
        ]
        return status_view.status_reply(
            workers=workers,
            snapshots=self._own_snapshots(),
            alerts=self._alerts.alerts(),
            host=self._load.host(),
            settings=self.settings,
            supervisor=self._supervisor_info(now),
        )

    def _supervisor_info(self, now: float) -> dict[str, Any]:
        lag = self._p.lag
        return {
            "pid": os.getpid(),
            "uptime_s": round(now - self._started, 1),
            "workers_wanted": self.pool.wanted,
            "workers_running": self._running_count(),
            "stopping": self._life.state.value if self._life.stopping else None,
            "rolling_restart": self._life.state is LifeState.RELOADING,
            "generation": self.pool.generation,
            "intake_paused": self._operator_paused or self._pool_load.intake_paused,
            "intake_paused_by_operator": self._operator_paused,
            "shed": self._pool_load.shed.name,
            "concurrency_cap": shed_cap(self.settings, self._pool_load.shed),
            "deaths": self.pool.deaths,
            "tasks_interrupted": self.pool.tasks_interrupted,
            "kafka_errors_per_min": round(self._errors.per_minute(), 1),
            "consumer_lag_s": None if self._lag_s() is None else round(self._lag_s() or 0.0, 1),
            "consumer_lag_messages": lag.lag_messages if lag is not None else None,
            "budget": self._budget.report().as_dict(),
        }

    def metrics_view(self) -> MetricsView:
        """What a Prometheus scrape shows; called by the metrics endpoint from the loop, at scrape time."""
        now = self._clock.monotonic()
        records = [self._p.table.read(i) for i in range(self._p.table.slots)]
        workers = [
            WorkerView(
                slot=s.index,
                state=s.state,
                restarts=s.restarts,
                record=records[s.index] if s.live and records[s.index].pid == s.pid else None,
                rss_mb=(reading.rss_mb if (reading := self._load.process(s.pid)) is not None else None),
            )
            for s in self.pool.slots
            if s.index < self.pool.wanted or s.live or s.restarts
        ]
        lag = self._p.lag
        return MetricsView(
            totals=self.pool.counters.totals(records),
            workers=workers,
            workers_wanted=self.pool.wanted,
            deaths=self.pool.deaths,
            tasks_interrupted=self.pool.tasks_interrupted,
            load=self._load.host(),
            lag_s=self._lag_s(),
            lag_messages=lag.lag_messages if lag is not None else None,
            uptime_s=now - self._started,
            start_time=self._started_wall,
            health=self._alerts.health(),
            alerts=[(a.name, a.level) for a in self._alerts.alerts()],
            intake_paused=self._operator_paused or self._pool_load.intake_paused,
            intake_paused_by_operator=self._operator_paused,
            shed_level=int(self._pool_load.shed),
            budget=self._budget.report(),
        )
