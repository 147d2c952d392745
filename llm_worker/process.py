"""The worker process's life: signals → bootstrap → consumer loop → close → exit code.

``run_worker`` is the entry point the supervisor calls in a freshly forked child (and ``llm-worker``
calls in the foreground). Everything with a socket or a thread is created here, after the fork.
The caller first runs llm_service/worker_setup.py (signal dispositions, random state, logging) and
owns the final ``os._exit``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType
from zoneinfo import ZoneInfo

from llm_service import exit_codes, log_lines
from llm_service.config import Settings
from llm_service.logs import reopen_log_files
from llm_service.proctitle import set_worker_title
from llm_service.signals import IGNORED_UNDER_SUPERVISOR, WORKER_HANDLED
from llm_service.status_table import Breaker, Conn, SlotWriter, WorkerState
from llm_worker.balance_watch import BalanceWatch
from llm_worker.bootstrap import Clients, bootstrap
from llm_worker.budget_gate import Budgets, SpendGate
from llm_worker.consumer_loop import ConsumerLoop, LoopConfig
from llm_worker.events import EventPublisher
from llm_worker.gigachat.limiter import default_directory, private_directory
from llm_worker.membership import leave_group
from llm_worker.pipeline import TaskPipeline
from llm_worker.retry_policy import RetryPolicy
from llm_worker.spending import SpendingFiles
from llm_worker.task_lease import TaskLeases
from llm_worker.task_message import TaskRules

log = logging.getLogger(__name__)


class Signals:
    """Stop requests, noted by signal handlers and read by the loops (docs/architecture.md, "Conventions").

    SIGTERM/SIGINT once: graceful stop; twice, or SIGQUIT: fast stop. SIGUSR1: reopen log files.
    SIGHUP is ignored: the supervisor reloads by replacing workers, not by signalling them.
    """

    def __init__(self) -> None:
        self._stops = 0
        self._fast = False
        self._reopen = False

    def install(self) -> None:
        """Install the handlers of WORKER_HANDLED (llm_service/signals.py). Call first in run_worker.

        llm_service/worker_setup.py has already reset or ignored everything else.
        """
        handlers = {
            signal.SIGTERM: self._on_stop,
            signal.SIGINT: self._on_stop,
            signal.SIGQUIT: self._on_fast,
            signal.SIGUSR1: self._on_reopen,
        }
        for sig in WORKER_HANDLED:
            # Under the supervisor SIGINT arrives ignored: Ctrl-C in its terminal reaches the whole
            # process group, and the supervisor's own SIGTERM would make it a second, fast, stop.
            if sig in IGNORED_UNDER_SUPERVISOR and signal.getsignal(sig) is signal.SIG_IGN:
                continue
            signal.signal(sig, handlers[sig])

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stops += 1

    def _on_fast(self, signum: int, frame: FrameType | None) -> None:
        self._fast = True

    def _on_reopen(self, signum: int, frame: FrameType | None) -> None:
        self._reopen = True

    @property
    def graceful(self) -> bool:
        return self._stops >= 1

    @property
    def fast(self) -> bool:
        return self._fast or self._stops >= 2

    def take_reopen(self) -> bool:
        reopen, self._reopen = self._reopen, False
        return reopen


def run_worker(
    *, settings: Settings, slot: int, progress: SlotWriter, worker_id: str, group_instance_id: str | None
) -> int:
    """Run one worker until it is told to stop; returns an exit code of llm_service.exit_codes.

    Called in the worker process's main thread (a fresh fork, or ``llm-worker``). ``slot`` is the
    worker's identity in the pool; ``progress`` is its record in the shared status table.
    """
    signals = Signals()
    signals.install()
    progress.update(
        pid=os.getpid(),
        state=WorkerState.BOOTING,
        started_at=time.time(),
        capacity=settings.worker_max_concurrent_tasks,
    )
    progress.heartbeat()
    log.info("Worker %s (slot %d) starting", worker_id, slot)
    outcome = bootstrap(
        settings=settings,
        progress=progress,
        stop=signals,
        worker_id=worker_id,
        group_instance_id=group_instance_id,
    )
    if isinstance(outcome, int):
        progress.update(state=WorkerState.STOPPED)
        return outcome
    clients = outcome
    try:
        return _serve(settings, clients, progress, signals, worker_id=worker_id, slot=slot)
    except Exception:  # the process boundary: log with the traceback, exit as crashed
        log.exception("Worker %s crashed", worker_id)
        return exit_codes.CRASHED
    finally:
        clients.close()
        if group_instance_id is not None and progress.leave_requested():
            leave_group(settings, group_instance_id)
        progress.update(state=WorkerState.STOPPED)
        log.info("Worker %s stopped", worker_id)


def _serve(
    settings: Settings, clients: Clients, progress: SlotWriter, signals: Signals, *, worker_id: str, slot: int
) -> int:
    """Wire the pipeline and the consumer loop to the clients, and run the loop until a stop."""
    # The status table's breaker is that of the default model's chain (GIGACHAT_MODEL and its
    # fallbacks): OPEN only when none of them can be called. Then the intake shrinks to one probing
    # task; one model down with a fallback available keeps full capacity.
    chain = clients.gigachat.chain(settings.gigachat_model)

    def chain_state() -> Breaker:
        return clients.breakers.chain_state(chain)

    def breaker_changed(model: str, state: Breaker) -> None:
        now = chain_state()
        progress.update(breaker=now, conn_gigachat=Conn.DOWN if now is Breaker.OPEN else Conn.UP)

    clients.breakers.on_change(breaker_changed)
    gate = spend_gate(settings)
    # Room for a thread per place, per task getting ready ahead of one and per task that gave its
    # place back (llm_worker/places.py), and for the tasks of spent tenants (budget_gate.py).
    executor = ThreadPoolExecutor(
        max_workers=3 * settings.worker_max_concurrent_tasks + settings.gigachat_tenant_held_max,
        thread_name_prefix="task",
    )
    loop = ConsumerLoop(
        consumer=clients.consumer,
        pipeline=_pipeline(settings, clients, progress, worker_id, gate),
        executor=executor,
        progress=progress,
        config=LoopConfig(
            topic=settings.kafka_tasks_topic,
            max_concurrent=settings.worker_max_concurrent_tasks,
            drain_timeout_s=settings.worker_drain_timeout,
            revoke_timeout_s=settings.worker_revoke_timeout_s,
            tenant_held_max=settings.gigachat_tenant_held_max,
        ),
        stop=signals,
        breaker_state=chain_state,
        spend_hold=gate.pool_hold,
        tenant_held=gate.held,
        on_turn=lambda: _housekeeping(signals),
        show_title=lambda busy, note: set_worker_title(
            slot, busy=busy, capacity=settings.worker_max_concurrent_tasks, note=note
        ),
    )
    loop.subscribe()
    stop_balance = threading.Event()
    if settings.gigachat_balance_interval_s > 0:
        BalanceWatch(
            files=gate.files,
            read=clients.gigachat.balance,
            interval_s=settings.gigachat_balance_interval_s,
            stop=stop_balance,
        ).start()
    progress.update(state=WorkerState.RUNNING)
    log.info(log_lines.WORKER_STARTED, settings.kafka_tasks_topic)
    try:
        return loop.run()
    finally:
        # Threads still inside an HTTP call after a fast stop are not waited for: their tasks were
        # handed back (uncommitted) and the caller exits the process.
        stop_balance.set()
        executor.shutdown(wait=False, cancel_futures=True)
        gate.flush()  # the tokens counted since the last refresh (none pending with a budget set)


def spend_gate(settings: Settings) -> SpendGate:
    """The budgets and payment state, shared by the host's workers through the limiter directory."""
    directory = default_directory(settings)
    private_directory(directory)
    return SpendGate(
        files=SpendingFiles(directory=directory, zone=ZoneInfo(settings.gigachat_budget_timezone)),
        budgets=Budgets.from_settings(settings),
        probe_s=settings.gigachat_payment_probe_s,
    )


def _pipeline(
    settings: Settings, clients: Clients, progress: SlotWriter, worker_id: str, gate: SpendGate
) -> TaskPipeline:
    publisher = EventPublisher(
        producer=clients.producer,
        status_topic=settings.kafka_status_topic,
        dlq_topic=settings.kafka_dlq_topic,
        worker_id=worker_id,
        max_request_bytes=settings.kafka_max_request_bytes,
        on_error=lambda: progress.add(kafka_errors=1),
    )
    return TaskPipeline(
        rules=TaskRules.from_settings(settings),
        storage=clients.storage,
        model=clients.gigachat,
        publisher=publisher,
        progress=progress,
        retry=RetryPolicy(
            max_attempts=settings.task_max_attempts,
            base_s=settings.task_retry_backoff_s,
            max_s=settings.task_retry_backoff_max_s,
        ),
        task_timeout_s=settings.task_timeout_s,
        leases=TaskLeases(directory=default_directory(settings) / "tasks"),
        max_model_calls=settings.model_calls_per_task,
        # A failure costs no attempt only while no model of the task's chain can be called: else a
        # prompt that makes the fallback fail would retry forever while its own model is down.
        breaker_open=lambda model: (
            clients.breakers.chain_state(clients.gigachat.chain(model)) is Breaker.OPEN
        ),
        gate=gate,
    )


def _housekeeping(signals: Signals) -> None:
    if signals.take_reopen():
        reopen_log_files()
