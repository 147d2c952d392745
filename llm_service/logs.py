"""Logging set-up shared by every process: the contract's text format or JSON, chosen by LOG_FORMAT.

Text: ``{version} - {logger} - {function} - {timestamp} - {service} - {level} - {message}`` with an
ISO-8601 UTC timestamp without spaces, so that whitespace-splitting tools (awk, cut) see stable fields.
JSON: the same fields as keys, through python-json-logger.

Called once per process, after fork in workers (handlers hold file descriptors and locks).
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from llm_service import __version__

TEXT_FORMAT = (
    "%(version)s - %(name)s - %(funcName)s - %(asctime)s - %(service)s - %(levelname)s - %(message)s"
)
JSON_FIELDS = ["version", "name", "funcName", "asctime", "service", "levelname", "message"]
JSON_RENAMES = {"name": "logger", "funcName": "function", "asctime": "timestamp", "levelname": "level"}


def iso_timestamp(created: float) -> str:
    return datetime.fromtimestamp(created, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


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
    """The contract's text format. The message is escaped to one line: the runbook's greps count
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


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonLogFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES)
    return TextFormatter()


def configure_logging(
    *, service: str, log_format: str = "text", level: str = "INFO", log_file: str = ""
) -> None:
    """Replace the root logger's handlers with one on stderr (and one on LOG_FILE when set)."""
    root = logging.getLogger()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
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


def set_service_name(service: str) -> None:
    """Rename the service on every handler, e.g. when a worker learns its slot after start-up."""
    for handler in logging.getLogger().handlers:
        for flt in handler.filters:
            if isinstance(flt, _ServiceFields):
                flt.service = service


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
