"""Fixtures shared by the foundation tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_service.status_table import StatusTable


@pytest.fixture
def table() -> Iterator[StatusTable]:
    """A fresh three-slot status table in shared memory, closed after the test."""
    created = StatusTable.create(3)
    yield created
    created.close()
