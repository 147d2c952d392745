"""What a reload may change in place and what needs the workers replaced.

Pure logic, used by the supervisor on SIGHUP / ``llmctl reload``. A setting the workers never see
(pool size, limits, alert levels, the supervisor's own timings) is applied in place; any other change
(Kafka, S3, GigaChat, tasks, concurrency, logging) is handed to new workers by a rolling restart,
one slot at a time. Settings fixed at start (the socket path, the table size) need a restart of the
supervisor, which the reload says in its log line. A reload that changes the consumer group or the
tasks topic is refused: a rolling restart would run old and new workers side by side, two groups (or
two topics) consuming at once, and the same task could be processed twice.

Which setting is which is declared on the setting itself (``reload=`` in llm_service/config.py).
"""

from __future__ import annotations

import dataclasses

from llm_service.config import Reload, Settings, reload_scope


def _declared(*scopes: Reload) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(Settings) if reload_scope(f) in scopes)


# Derived from each setting's ``reload=`` declaration in llm_service/config.py.
SUPERVISOR_ONLY = _declared(Reload.IN_PLACE, Reload.AT_RESTART)
FIXED_AT_START = _declared(Reload.AT_RESTART)
REFUSED_ON_RELOAD = _declared(Reload.REFUSED)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Change:
    changed: tuple[str, ...]  # env names

    @property
    def needs_rolling_restart(self) -> bool:
        return any(name.lower() not in SUPERVISOR_ONLY for name in self.changed)

    @property
    def needs_supervisor_restart(self) -> tuple[str, ...]:
        return tuple(n for n in self.changed if n.lower() in FIXED_AT_START)

    @property
    def refused(self) -> tuple[str, ...]:
        """Changes a reload must not make (REFUSED_ON_RELOAD); the supervisor needs a restart."""
        return tuple(n for n in self.changed if n.lower() in REFUSED_ON_RELOAD)


def compare(old: Settings, new: Settings) -> Change:
    return Change(
        changed=tuple(
            f.name.upper()
            for f in dataclasses.fields(Settings)
            if getattr(old, f.name) != getattr(new, f.name)
        )
    )
