"""Held messages per slot and the death ledger, on real shared memory (llm_service/message_ledger.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from llm_service.message_ledger import LEDGER_ROWS, HeldMessage, topic_code
from llm_service.status_table import StatusTable


@pytest.fixture
def table() -> Iterator[StatusTable]:
    t = StatusTable.create(2)
    yield t
    t.close()


def test_held_messages_are_readable_after_the_writer_is_gone(table: StatusTable) -> None:
    writer = table.writer(1)
    a = writer.held.start("tasks", 3, 41)
    b = writer.held.start("tasks", 0, 7)
    writer.held.finish(a)
    assert table.held_messages(1) == [HeldMessage(topic_code("tasks"), 0, 7)]
    writer.held.finish(b)
    assert table.held_messages(1) == []
    assert table.held_messages(0) == []


def test_clearing_a_slot_forgets_what_it_held(table: StatusTable) -> None:
    table.writer(0).held.start("tasks", 1, 0)
    table.clear(0)
    assert table.held_messages(0) == []


def test_deaths_add_up_per_message_and_workers_see_them(table: StatusTable) -> None:
    reader = table.writer(0).ledger
    assert reader.deaths("tasks", 2, 10) == 0
    poison = HeldMessage(topic_code("tasks"), 2, 10)
    other = HeldMessage(topic_code("tasks"), 2, 11)
    assert table.record_deaths([poison, other]) == [(poison, 1), (other, 1)]
    assert reader.deaths("tasks", 2, 10) == 1
    assert table.record_deaths([poison]) == [(poison, 2)]
    assert reader.deaths("tasks", 2, 10) == 2 and reader.deaths("tasks", 2, 11) == 1
    assert reader.deaths("other-topic", 2, 10) == 0


def test_a_full_ledger_reuses_its_oldest_row(table: StatusTable) -> None:
    code = topic_code("t")
    table.record_deaths([HeldMessage(code, 0, i) for i in range(LEDGER_ROWS)])
    table.record_deaths([HeldMessage(code, 1, 0)])
    reader = table.writer(0).ledger
    assert reader.deaths("t", 1, 0) == 1
    assert reader.deaths("t", 0, 0) == 0, "the oldest row was reused"
    assert reader.deaths("t", 0, 1) == 1


def test_the_table_closes_while_a_writer_still_exists() -> None:
    t = StatusTable.create(1)
    writer = t.writer(0)
    writer.held.start("tasks", 0, 1)
    assert writer.ledger.deaths("tasks", 0, 1) == 0
    t.close()  # a lone llm-worker closes its table with the writer alive: no BufferError
