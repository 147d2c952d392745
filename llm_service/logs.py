"""Logging set-up shared by every process: the runbook's text format or JSON, chosen by LOG_FORMAT.

Text: ``{version} - {logger} - {function} - {timestamp} - {service} - {level} - {message}`` with an
ISO-8601 UTC timestamp without spaces, so that whitespace-splitting tools (awk, cut) see stable fields.
JSON: the same fields as keys, through python-json-logger.

Records go to stdout, where ``docker logs`` and journald look (LOG_FILE adds a file). The supervisor
and its workers share that stdout: each record reaches it in one ``write(2)``, so lines of different
processes never interleave mid-line (a pipe keeps writes up to PIPE_BUF, 4 KiB, whole).

Called once per process, after fork in workers (handlers hold file descriptors and locks).
"""

from __future__ import annotations

import logging
import logging.handlers
import math
import os
import re
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from pythonjsonlogger.json import JsonFormatter

from llm_service import __version__

if TYPE_CHECKING:
    from llm_service.config import Settings

TEXT_FORMAT = (
    "%(version)s - %(name)s - %(funcName)s - %(asctime)s - %(service)s - %(levelname)s - %(message)s"
)
JSON_FIELDS = ["version", "name", "funcName", "asctime", "service", "levelname", "message"]
JSON_RENAMES = {"name": "logger", "funcName": "function", "asctime": "timestamp", "levelname": "level"}


class _SecondText:
    """The ``YYYY-MM-DDTHH:MM:SS`` text of the last second formatted: a worker logs ~6 records and
    stamps ~3 status events per task, and strftime was the dearest step of each."""

    def __init__(self) -> None:
        self.last: tuple[int, str] = (-1, "")  # replaced whole, so threads never see half of it

    def text(self, second: int) -> str:
        last = self.last
        if last[0] != second:
            last = (second, datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S"))
            self.last = last
        return last[1]


_SECONDS = _SecondText()


def iso_timestamp(created: float) -> str:
    """``created`` (epoch seconds) as ISO-8601 UTC with milliseconds, e.g. 2026-12-02T01:54:33.250Z."""
    fraction, whole = math.modf(created)
    second, micros = int(whole), round(fraction * 1_000_000)  # to the µs, as datetime rounds
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:  # before 1970
        second, micros = second - 1, micros + 1_000_000
    return f"{_SECONDS.text(second)}.{micros // 1000:03d}Z"


class _ServiceFields(logging.Filter):
    """Stamps every record with the package version and the service name (e.g. ``llm-worker[2]``)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.version = __version__
        record.service = self.service
        return True


# C0 and C1 controls, DEL and the Unicode line separators: anything a terminal or a line-based tool
# (grep, awk, logrotate'd files read line by line) could take for a line break or an escape sequence.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with control characters escaped (``\\n``, ``\\x1b``) and lone surrogates too, so
    that a record is one line of valid UTF-8 whatever a task id or error message held."""
    escaped = _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    return escaped.encode("utf-8", "backslashreplace").decode("utf-8")


class TextFormatter(logging.Formatter):
    """The runbook's text format. The message is escaped to one line: the runbook's greps count
    records by lines. A traceback stays multi-line, but cannot break the file's encoding."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_timestamp(record.created)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        line = super().formatMessage(record)
        return one_line(line)

    def formatException(self, ei: Any) -> str:  # noqa: N802
        return _valid_utf8(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return _valid_utf8(super().formatStack(stack_info))


def _valid_utf8(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class JsonLogFormatter(JsonFormatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return iso_timestamp(record.created)


class OneWriteHandler(logging.StreamHandler[TextIO]):
    """A stream handler that hands each record, newline included, to the OS in a single write.

    The stream's own buffer is flushed first; a stream without a file descriptor (a test's StringIO)
    gets the plain StreamHandler behaviour.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            super().emit(record)
            return
        try:
            data = (self.format(record) + self.terminator).encode("utf-8", "backslashreplace")
            self.stream.flush()
            _write_all(fd, data)
        except Exception:  # the logging module's door: a failing handler must not break the caller
            self.handleError(record)


def _write_all(fd: int, data: bytes) -> None:
    """One write for the whole record; only a partial write (a full pipe, a signal) takes more."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLogFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES)
    return TextFormatter()


def log_settings_changed(changed: tuple[str, ...] | list[str]) -> bool:
    """Whether a reload's changed variables touch logging (then :func:`configure_logging_from` again)."""
    return bool({"LOG_FORMAT", "LOG_LEVEL", "LOG_FILE"} & set(changed))


def configure_logging_from(settings: Settings, *, service: str) -> None:
    """:func:`configure_logging` with the LOG_* settings; OSError when LOG_FILE cannot be opened."""
    configure_logging(
        service=service, log_format=settings.log_format, level=settings.log_level, log_file=settings.log_file
    )


def configure_logging(
    *, service: str, log_format: str = "text", level: str = "INFO", log_file: str = ""
) -> None:
    """Replace the root logger's handlers with one on stdout (and one on LOG_FILE when set)."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = [OneWriteHandler(sys.stdout)]
    if log_file:
        # WatchedFileHandler notices logrotate's move; SIGUSR1 reopens explicitly (reopen_log_files).
        # Opened before the old handlers go: if it raises (a reload's bad LOG_FILE), logging is intact.
        handlers.append(logging.handlers.WatchedFileHandler(log_file))
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = make_formatter(log_format)
    service_fields = _ServiceFields(service)
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(service_fields)
        root.addHandler(handler)
    root.setLevel(level)
    # kafka-python is chatty at INFO (every connect and rebalance step); operators want our lines.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))


def reopen_log_files() -> None:
    """SIGUSR1: reopen file handlers so logrotate's new file is written to."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.handlers.WatchedFileHandler):
            handler.acquire()
            try:
                handler.close()
                handler.stream = handler._open()
            finally:
                handler.release()
