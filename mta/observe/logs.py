"""The daemon's own log lines (Python logging, on stderr): text, journal or JSON.

`[log] format`:
- "text": `2026-01-01 12:00:00,000 INFO mta: message`, for a terminal or a plain file.
- "journal": `<6>mta: message`. The sd-daemon(3) prefix carries the syslog priority (<3>
  error, <4> warning, <6> info, <7> debug) and journald adds the time itself. journald
  reads a stream line by line and sd-daemon(3) says to prefix every line, so each line
  of a multi-line message (a traceback) carries the record's prefix: no continuation
  line is demoted to info.
- "json": one object per line, `{"time", "level", "logger", "message", "exc"}` (`time` a
  unix time, as in the events log; `exc` the traceback or null). Newlines are escaped,
  so a record is always one line.
- "auto" (default): journal when stderr is the journal stream systemd names in
  $JOURNAL_STREAM ("st_dev:st_ino", systemd.exec(5)), else text; a redirected stderr (a
  file, a pipe) under systemd stays text.
"""

from __future__ import annotations

import json
import logging
import os
from typing import IO

__all__ = ["FORMATS", "JournalFormatter", "JsonFormatter", "is_journal", "setup_logging"]

FORMATS = ("auto", "text", "journal", "json")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _priority(levelno: int) -> int:
    """syslog(3) priority of a logging level: CRITICAL 2, ERROR 3, WARNING 4, INFO 6,
    DEBUG 7 (Python has no NOTICE; levels in between round towards the more severe)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """`<N>logger: message`, every line prefixed (sd-daemon(3)), no time stamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_priority(record.levelno)}>"
        text = super().format(record)
        return "\n".join(prefix + line for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        exc = None
        if record.exc_info:
            exc = self.formatException(record.exc_info)
        elif record.exc_text:
            exc = record.exc_text
        if record.stack_info:
            exc = (exc + "\n" if exc else "") + self.formatStack(record.stack_info)
        return json.dumps({"time": round(record.created, 6),
                           "level": record.levelname.lower(), "logger": record.name,
                           "message": record.getMessage(), "exc": exc},
                          ensure_ascii=False, default=str)


def is_journal(stream: IO[str]) -> bool:
    """Whether `stream` is the journal stream systemd connected ($JOURNAL_STREAM)."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
        return (int(dev), int(ino)) == (st.st_dev, st.st_ino)
    except (ValueError, OSError):  # unset, malformed, or a stream without a descriptor
        return False


def make_formatter(fmt: str, stream: IO[str]) -> logging.Formatter:
    if fmt == "auto":
        fmt = "journal" if is_journal(stream) else "text"
    if fmt == "journal":
        return JournalFormatter()
    if fmt == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def setup_logging(level: str, fmt: str, stream: IO[str]) -> None:
    """Route every logger through one handler on `stream` in format `fmt` (FORMATS)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(fmt, stream))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
