"""The events log: one JSON object per line, one line per state change.

Lines are buffered in memory and written by a worker thread on a short interval, so an
event never blocks the event loop on disk I/O. Operators tail this file; the field names
are part of the public contract (DESIGN.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mta.observe.rotate import Rotator

__all__ = ["EventLog"]

# One encoder for every line: json.dumps with arguments builds a new one per call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=str).encode


class EventLog:
    """`emit("received", id=..., tenant=..., recipient=...)` appends one line.

    `path=None` keeps events in memory only (`recent`), for tests of a single module.
    """

    FLUSH_INTERVAL = 0.2

    def __init__(self, path: str | Path | None, *, keep_recent: int = 0,
                 rotate: Any = None) -> None:
        self.path = Path(path) if path else None
        self._buf: list[str] = []
        self._lock = threading.Lock()
        # Serialises file writes with rotation and reopen: a line is whole in one file.
        self._io = threading.Lock()
        self._rotator = Rotator(self.path, rotate) if rotate is not None and self.path else None
        self._task: asyncio.Task[None] | None = None
        self._file = None
        self.keep_recent = keep_recent
        self.recent: list[dict[str, Any]] = []
        # Called with each record: metrics count state changes from the same stream the
        # operator reads, so the two can never disagree.
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")

    def emit(self, event: str, **fields: Any) -> None:
        record = {"time": round(time.time(), 6), "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        for listener in self.listeners:
            listener(record)
        if self.keep_recent:
            self.recent.append(record)
            del self.recent[:-self.keep_recent]
        if self._file is None:
            return
        line = _ENCODE(record) + "\n"
        with self._lock:
            self._buf.append(line)
        if self._task is None:
            try:
                self._task = asyncio.get_running_loop().create_task(self._flusher())
            except RuntimeError:  # no loop (CLI use): write now
                self._write()

    def _write(self) -> None:
        with self._io:
            with self._lock:
                lines, self._buf = self._buf, []
            if lines and self._file is not None:
                self._file.write("".join(lines))
                self._file.flush()
                rot = self._rotator
                if rot is not None and rot.active and rot.due(self._file.tell()):
                    self._file.close()
                    self._file = None
                    try:
                        rot.rotate()
                    finally:
                        self._file = open(self.path, "a", encoding="utf-8")

    async def _flusher(self) -> None:
        while True:
            await asyncio.sleep(self.FLUSH_INTERVAL)
            if self._buf:
                await asyncio.to_thread(self._write)

    def reopen(self) -> None:
        """SIGHUP / SIGUSR1: reopen the file so logrotate can move it away."""
        if self.path is None:
            return
        self._write()
        with self._io:
            if self._file is not None:
                self._file.close()
            self._file = open(self.path, "a", encoding="utf-8")
            if self._rotator is not None:
                self._rotator.opened = time.time()

    def edit(self, fn: Callable[[Path], Any]) -> Any:
        """Call `fn(path)` with every buffered line written and the file closed, under the
        lock that rotation takes: `fn` may rewrite the current file and the rotated ones
        (an erasure, mta.gdpr) and no line is written or rotated meanwhile. Blocking: run
        it in a thread."""
        if self.path is None:
            return fn(None)
        self._write()
        with self._io:
            if self._file is not None:
                self._file.close()
                self._file = None
            try:
                return fn(self.path)
            finally:
                self._file = open(self.path, "a", encoding="utf-8")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._write()
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
