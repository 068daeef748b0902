"""Rotation of the events log: rename, reopen, compress the old file, keep N.

Runs in the events log's writer thread, under its I/O lock, between two whole writes,
so no line is lost or torn: every line goes either to the old file or to the new one.
Names: `<events>-YYYYMMDDTHHMMSS.gz` (or `.zst`), UTC, oldest removed beyond `keep`.
"""

from __future__ import annotations

import gzip
import os
import shutil
import time
from pathlib import Path
from typing import Any

__all__ = ["Rotator", "prune_older", "rotated_files"]

_SUFFIX = {"gzip": ".gz", "zstd": ".zst", "none": ""}


def rotated_files(path: Path) -> list[Path]:
    """The rotated copies of `path`, oldest first (by stamp, then the .N of one second)."""
    prefix = path.name + "-"
    found = [p for p in path.parent.iterdir()
             if p.name.startswith(prefix) and not p.name.endswith(".tmp")]

    def key(p: Path) -> tuple[str, int]:
        parts = p.name[len(prefix):].split(".")
        return parts[0], int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return sorted(found, key=key)


class Rotator:
    def __init__(self, path: Path, cfg: Any) -> None:
        self.path = path
        self.max_size = int(cfg.max_size)
        self.interval = float(cfg.interval)
        self.keep = int(cfg.keep)
        self.compress = cfg.compress
        self.opened = time.time()

    @property
    def active(self) -> bool:
        return bool(self.max_size or self.interval)

    def due(self, size: int) -> bool:
        if self.max_size and size >= self.max_size:
            return True
        return bool(self.interval and time.time() - self.opened >= self.interval)

    def rotate(self) -> None:
        """Move the (closed) current file aside, compressed; the caller reopens."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}-{stamp}{_SUFFIX[self.compress]}")
        n = 1
        while target.exists():  # two rotations in one second
            target = self.path.with_name(
                f"{self.path.name}-{stamp}.{n}{_SUFFIX[self.compress]}")
            n += 1
        self.opened = time.time()
        if not self.path.exists():
            return
        if self.compress == "none":
            os.replace(self.path, target)
        else:
            aside = self.path.with_name(self.path.name + ".rotating.tmp")
            os.replace(self.path, aside)
            tmp = target.with_name(target.name + ".tmp")
            with open(aside, "rb") as src, _open_compressed(tmp, self.compress) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, target)  # complete or absent, never half a file
            aside.unlink()
        self._prune()

    def _prune(self) -> None:
        old = rotated_files(self.path)
        for p in old[:-self.keep]:
            p.unlink(missing_ok=True)


def _open_compressed(path: Path, kind: str) -> Any:
    if kind == "zstd":
        import zstandard
        return zstandard.ZstdCompressor().stream_writer(open(path, "wb"), closefd=True)
    return gzip.open(path, "wb", compresslevel=6)


def prune_older(path: Path, before: float) -> int:
    """Delete the rotated copies of `path` last written before `before` ([retention]
    events); returns how many. The current file is never touched."""
    n = 0
    for p in rotated_files(path) if path.parent.is_dir() else []:
        try:
            if p.stat().st_mtime < before:
                p.unlink()
                n += 1
        except FileNotFoundError:
            continue
    return n
