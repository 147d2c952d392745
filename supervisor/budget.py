"""The day's token budgets and the payment pause as the supervisor reports them: status, alerts, metrics.

The workers keep the books (llm_worker/spending.py, in the limiter directory); the supervisor only
reads them, at most once per ``REFRESH_S``, so that ``llmctl status``, the health alerts
``token_budget_exhausted``, ``model_payment_required`` and ``model_balance_low`` and the Prometheus
gauges show spent and remaining tokens, the prepaid balance and why intake waits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from llm_service.config import Settings
from llm_worker.budget_gate import Budgets
from llm_worker.gigachat.limiter import default_directory
from llm_worker.spending import Balance, PaymentPause, Spend, SpendingFiles

# Daily budgets move slowly next to this; a status client polling once a second would otherwise pay
# for three file reads on each request (issue 9: the supervisor <= 1 % of a core).
REFRESH_S = 5.0
CRITICAL, WARNING = "critical", "warning"


@dataclass(frozen=True)
class Line:
    """One budget: ``budget`` 0 means none (then ``remaining`` is None)."""

    budget: int
    spent: int

    @property
    def remaining(self) -> int | None:
        return max(0, self.budget - self.spent) if self.budget > 0 else None

    @property
    def exhausted(self) -> bool:
        return self.budget > 0 and self.spent >= self.budget

    def as_dict(self) -> dict[str, Any]:
        return {"budget": self.budget, "spent": self.spent, "remaining": self.remaining}


@dataclass(frozen=True)
class BudgetReport:
    day: str
    pool: Line
    tenants: dict[str, Line] = field(default_factory=dict)
    payment: PaymentPause | None = None
    balance: Balance | None = None
    balance_alert: int = 0

    @property
    def pause_reason(self) -> str | None:
        if self.payment is not None:
            return f"model payment required (HTTP {self.payment.status})"
        if self.pool.exhausted:
            return "pool token budget spent"
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day,
            "pool": self.pool.as_dict(),
            "tenants": {name: line.as_dict() for name, line in sorted(self.tenants.items())},
            "payment_required": None
            if self.payment is None
            else {"status": self.payment.status, "since": self.payment.since},
            "intake_paused_reason": self.pause_reason,
            "balance": None
            if self.balance is None
            else {"at": self.balance.at, "prepaid": self.balance.prepaid, "packages": self.balance.packages},
        }

    def low_packages(self) -> dict[str, float]:
        if self.balance is None or not self.balance.prepaid or self.balance_alert <= 0:
            return {}
        return {n: v for n, v in sorted(self.balance.packages.items()) if v < self.balance_alert}


def report(
    budgets: Budgets,
    spend: Spend,
    payment: PaymentPause | None,
    balance: Balance | None = None,
    balance_alert: int = 0,
) -> BudgetReport:
    names = set(budgets.tenants) | set(spend.tenants)
    return BudgetReport(
        day=spend.day,
        pool=Line(budget=budgets.pool, spent=spend.pool),
        tenants={n: Line(budget=budgets.tenants.get(n, 0), spent=spend.tenants.get(n, 0)) for n in names},
        payment=payment,
        balance=balance,
        balance_alert=balance_alert,
    )


def budget_alerts(rep: BudgetReport) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    spent = [name for name, line in sorted(rep.tenants.items()) if line.exhausted]
    if rep.pool.exhausted or spent:
        what = ["the pool"] if rep.pool.exhausted else []
        what += [f"tenant {name}" for name in spent]
        found["token_budget_exhausted"] = (
            WARNING,
            f"daily token budget spent by {', '.join(what)}; their tasks wait until the next day "
            "or a reload that raises the budget",
        )
    if rep.payment is not None:
        found["model_payment_required"] = (
            CRITICAL,
            f"GigaChat answered HTTP {rep.payment.status} (package spent or rights lost); "
            "intake paused, probing for its return",
        )
    low = rep.low_packages()
    if low:
        found["model_balance_low"] = (
            WARNING,
            "prepaid GigaChat package(s) running low: "
            + ", ".join(f"{name} {left:.0f} tokens left" for name, left in low.items()),
        )
    return found


class BudgetWatch:
    """Reads the host's spending files for the supervisor; re-made on reload (budgets may change)."""

    def __init__(self, *, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self._budgets = Budgets.from_settings(settings)
        self._files = SpendingFiles(
            directory=default_directory(settings), zone=ZoneInfo(settings.gigachat_budget_timezone)
        )
        self._balance_alert = (
            settings.gigachat_balance_alert_tokens if settings.gigachat_balance_interval_s else 0
        )
        self._clock = clock
        self._read_at = float("-inf")
        self._report = BudgetReport(day="", pool=Line(budget=self._budgets.pool, spent=0))

    def report(self) -> BudgetReport:
        if self._clock() - self._read_at >= REFRESH_S:
            self._read_at = self._clock()
            self._report = report(
                self._budgets,
                self._files.spent(),
                self._files.payment(),
                self._files.balance(),
                self._balance_alert,
            )
        return self._report
