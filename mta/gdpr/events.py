"""An address in the events log: the current file and the rotated ones (plain, .gz, .zst).

Erasure rewrites each file that names it, under the events log's I/O lock (no line is
written or rotated meanwhile): a line whose `recipient` is the address goes; in any other
line (a message it sent, to others) the address becomes the key's alias. Each file is
written beside itself, fsynced and renamed over the old one, compressed as it was: a crash
leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from mta.gdpr.match import Matcher
from mta.observe.rotate import rotated_files

__all__ = ["erase_events", "event_files", "find_events"]


def event_files(path: Path | None) -> list[Path]:
    """The current events file and its rotated copies (oldest first, current last)."""
    if path is None or not path.parent.is_dir():
        return []
    return [*rotated_files(path), *([path] if path.exists() else [])]


def _open(path: Path) -> BinaryIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if path.name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"),  # type: ignore[return-value]
                                                          closefd=True)
    return open(path, "rb")


def _create(path: Path, like: Path) -> BinaryIO:
    """`path`, written compressed as `like` is."""
    if like.name.endswith(".gz"):
        return gzip.open(path, "wb", compresslevel=6)  # type: ignore[return-value]
    if like.name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdCompressor().stream_writer(open(path, "wb"),  # type: ignore[return-value]
                                                        closefd=True)
    return open(path, "wb")


def _lines(path: Path) -> Iterator[bytes]:
    with _open(path) as f:
        lines = io.BufferedReader(f) if path.name.endswith(".zst") else f  # type: ignore[arg-type]
        yield from lines


def find_events(path: Path | None, m: Matcher) -> list[dict[str, Any]]:
    """Every event that names the address, oldest first, with the file it is in."""
    out = []
    for p in event_files(path):
        for raw in _lines(p):
            if m.in_bytes(raw):
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = {"line": raw.decode("utf-8", "replace").rstrip("\n")}
                out.append({"file": p.name, **record})
    return out


def _rewrite(p: Path, m: Matcher, alias: str) -> tuple[int, int]:
    """(lines dropped, lines redacted) of one file; untouched if it does not name it."""
    if not any(m.in_bytes(raw) for raw in _lines(p)):
        return 0, 0
    dropped = redacted = 0
    tmp = p.with_name(p.name + ".gdpr.tmp")
    try:
        with _create(tmp, p) as out:
            for raw in _lines(p):
                if not m.in_bytes(raw):
                    out.write(raw)
                    continue
                try:
                    record = json.loads(raw)
                except ValueError:
                    record = None
                if isinstance(record, dict) and m.same(record.get("recipient")):
                    dropped += 1
                    continue
                text = m.sub_text(raw.decode("utf-8", "replace"), alias)
                out.write(text.encode())
                redacted += 1
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(p.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)
    return dropped, redacted


def erase_events(path: Path | None, m: Matcher, alias: str) -> dict[str, int]:
    """Rewrite every events file that names the address (call it through EventLog.edit,
    in a thread)."""
    files = dropped = redacted = 0
    for p in event_files(path):
        d, r = _rewrite(p, m, alias)
        if d or r:
            files += 1
            dropped += d
            redacted += r
    return {"files_rewritten": files, "lines_removed": dropped, "lines_redacted": redacted}
