"""Task status codes of the status topic (docs/reference.md, "Status codes")."""

from __future__ import annotations

import enum


class TaskStatus(enum.IntEnum):
    RECEIVED = 1
    PROCESSING = 2
    COMPLETED = 3
    FAILED = 4

    @property
    def final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED)
