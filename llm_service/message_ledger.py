"""Which Kafka messages a worker is running, and how many workers each message has killed.

Two shared-memory areas of the status table (llm_service/status_table.py), both outliving any worker:

* **held messages**, one area per slot, written by its worker: the topic/partition/offset of every
  message whose pipeline run has started and not returned. After the worker dies, whatever is still
  there was in its hands at the moment of death.
* **the death ledger**, one area for the whole table, written only by the supervisor: per message, how
  many workers died holding it. Workers read it before running a delivery; a message that killed
  ``POISON_DEATHS`` workers is quarantined instead of run (docs/worker.md, "Poison messages").

The ledger has one writer (the supervisor's main loop) and many readers, so it is guarded by a
sequence counter (a seqlock, like the slot records). A reader keeps a copy and re-reads it only when
the counter moved, which happens only when a worker died: on the hot path a lookup costs one 8-byte
read and a dict lookup.

Topics are stored as a CRC-32 of their name; a collision would only need two topics of one host with
the same CRC and the same partition and offset in the ledger at once.
"""

from __future__ import annotations

import struct
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

POISON_DEATHS = 2  # workers a message may kill; its next delivery is quarantined
SUSPECT_DEATHS = 1  # a message that killed one worker runs alone, so a second death names it alone

_HELD = struct.Struct("<Iiq")  # topic crc32, partition, offset + 1 (0: a free entry)
_LEDGER_HEAD = struct.Struct("<QI4x")  # sequence counter, next entry to overwrite
_LEDGER_ROW = struct.Struct("<Iiqi4x")  # topic crc32, partition, offset + 1 (0: unused), deaths
LEDGER_ROWS = 512  # messages remembered; the oldest row is reused first


def held_area_size(entries: int) -> int:
    """Bytes of one slot's held-message area with room for ``entries`` messages."""
    return entries * _HELD.size


LEDGER_SIZE = _LEDGER_HEAD.size + LEDGER_ROWS * _LEDGER_ROW.size


def topic_code(topic: str) -> int:
    return zlib.crc32(topic.encode("utf-8", "replace"))


@dataclass(frozen=True)
class HeldMessage:
    """A message as the shared memory stores it (the topic as its CRC-32)."""

    topic_code: int
    partition: int
    offset: int


class HeldMessages:
    """One slot's held-message entries. Written by that slot's worker (any thread), read after it died.

    Works on offsets into the table's buffer, not on a slice of it: a live slice would keep the
    shared memory from being closed.
    """

    def __init__(self, buf: memoryview, *, at: int, entries: int) -> None:
        self._buf = buf
        self._at = at
        self._entries = entries
        self._lock = threading.Lock()
        self._free = list(range(entries - 1, -1, -1))

    def start(self, topic: str, partition: int, offset: int) -> int:
        """Note a message whose run starts; returns its entry, or -1 when every entry is taken."""
        with self._lock:
            if not self._free:
                return -1
            entry = self._free.pop()
        _HELD.pack_into(self._buf, self._at + entry * _HELD.size, topic_code(topic), partition, offset + 1)
        return entry

    def finish(self, entry: int) -> None:
        """The run returned (finished, failed or handed back): the message is no longer held."""
        if entry < 0:
            return
        _HELD.pack_into(self._buf, self._at + entry * _HELD.size, 0, 0, 0)
        with self._lock:
            self._free.append(entry)

    def read(self) -> list[HeldMessage]:
        """The messages still held. Meaningful once the writer is dead (no lock with a live writer)."""
        held = []
        for entry in range(self._entries):
            code, partition, offset = _HELD.unpack_from(self._buf, self._at + entry * _HELD.size)
            if offset:
                held.append(HeldMessage(code, partition, offset - 1))
        return held


class DeathLedger:
    """Per message, the workers that died holding it. ``record`` by the supervisor, ``deaths`` by workers."""

    def __init__(self, buf: memoryview, *, at: int) -> None:
        self._buf = buf
        self._at = at
        self._seen = -1  # the sequence counter of the cached copy
        self._cache: dict[tuple[int, int, int], int] = {}

    def deaths(self, topic: str, partition: int, offset: int) -> int:
        """How many workers died holding this message (cheap: re-reads only after a new death)."""
        seq = _LEDGER_HEAD.unpack_from(self._buf, self._at)[0]
        if seq != self._seen:
            self._reload()
        return self._cache.get((topic_code(topic), partition, offset), 0)

    def record(self, messages: Iterable[HeldMessage]) -> list[tuple[HeldMessage, int]]:
        """Add one death to each message (supervisor only); returns each with its new count."""
        rows = self._rows()
        seq, next_row = _LEDGER_HEAD.unpack_from(self._buf, self._at)
        counted = []
        _LEDGER_HEAD.pack_into(self._buf, self._at, seq + 1, next_row)  # odd: readers wait
        for message in messages:
            key = (message.topic_code, message.partition, message.offset)
            row = rows.get(key)
            if row is None:
                row, next_row = next_row, (next_row + 1) % LEDGER_ROWS
                rows = {k: r for k, r in rows.items() if r != row}
                rows[key] = row
                deaths = 1
            else:
                deaths = self._row(row)[3] + 1
            _LEDGER_ROW.pack_into(self._buf, self._row_at(row), *key[:2], message.offset + 1, deaths)
            counted.append((message, deaths))
        _LEDGER_HEAD.pack_into(self._buf, self._at, seq + 2, next_row)
        return counted

    def _reload(self) -> None:
        while True:
            before = _LEDGER_HEAD.unpack_from(self._buf, self._at)[0]
            if before % 2 == 0:
                cache = {}
                for row in range(LEDGER_ROWS):
                    code, partition, offset, deaths = self._row(row)
                    if offset:
                        cache[(code, partition, offset - 1)] = deaths
                if _LEDGER_HEAD.unpack_from(self._buf, self._at)[0] == before:
                    self._cache, self._seen = cache, before
                    return
            time.sleep(0)  # the supervisor is writing a few rows

    def _rows(self) -> dict[tuple[int, int, int], int]:
        rows = {}
        for row in range(LEDGER_ROWS):
            code, partition, offset, _ = self._row(row)
            if offset:
                rows[(code, partition, offset - 1)] = row
        return rows

    def _row(self, row: int) -> tuple[int, int, int, int]:
        values: tuple[int, int, int, int] = _LEDGER_ROW.unpack_from(self._buf, self._row_at(row))
        return values

    def _row_at(self, row: int) -> int:
        return self._at + _LEDGER_HEAD.size + row * _LEDGER_ROW.size
