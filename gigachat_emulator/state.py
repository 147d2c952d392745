"""Everything a running emulator remembers, in one object handed to the endpoints (no module globals)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from gigachat_emulator.auth import DEFAULT_AUTH_KEY, TokenStore
from gigachat_emulator.billing import Billing
from gigachat_emulator.calls import DEFAULT_CAPACITY, CallLog
from gigachat_emulator.clock import Clock, SystemClock
from gigachat_emulator.config import ConfigHolder, FaultConfig
from gigachat_emulator.faults import ConcurrencyLimiter, FaultInjector, OutageMode, OutageWindow, Sleeper
from gigachat_emulator.files import FileStore
from gigachat_emulator.per_model import ModelOutages

MAX_BODY_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ServerOptions:
    """Start-up settings that cannot change while running."""

    host: str = "127.0.0.1"
    port: int = 8090
    auth_key: str = DEFAULT_AUTH_KEY
    scope: str = "GIGACHAT_API_PERS"
    seed: int = 0
    ready_file: str | None = None
    call_log_capacity: int = DEFAULT_CAPACITY
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass
class EmulatorState:
    """The shared state of one emulator; every member is thread-safe on its own."""

    options: ServerOptions
    config: ConfigHolder
    clock: Clock
    tokens: TokenStore
    calls: CallLog
    injector: FaultInjector
    stopping: threading.Event = field(default_factory=threading.Event)
    files: FileStore = field(default_factory=FileStore)
    limiter: ConcurrencyLimiter = field(default_factory=ConcurrencyLimiter)
    outage: OutageWindow = field(default_factory=OutageWindow)
    model_outages: ModelOutages = field(default_factory=ModelOutages)
    billing: Billing = field(default_factory=Billing)

    @classmethod
    def create(
        cls, options: ServerOptions, config: FaultConfig, *, clock: Clock | None = None
    ) -> EmulatorState:
        """Build the state for a new emulator."""
        real_clock = clock or SystemClock()
        return cls(
            options=options,
            config=ConfigHolder(config),
            clock=real_clock,
            tokens=TokenStore(clock=real_clock),
            calls=CallLog(capacity=options.call_log_capacity),
            injector=FaultInjector(seed=options.seed),
        )

    @property
    def sleeper(self) -> Sleeper:
        """Sleeps that end when the emulator stops."""
        return Sleeper(self.stopping)

    def reset(self) -> None:
        """Clear the call log, tokens, files and any outage; restart the fault sequence from the seed.

        The configuration is kept.
        """
        self.calls.clear()
        self.tokens.clear()
        self.files.clear()
        self.outage.start(now=self.clock.now(), seconds=0, mode=OutageMode.HTTP_503)
        self.model_outages.clear()
        self.injector.reset()
        self.billing.clear()
