"""Events log rotation: every line kept, whole, in order, across rotations and reopens."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

from mta.config.rotate import EventsRotateConfig
from mta.observe.events import EventLog
from mta.observe.rotate import rotated_files


def _all_lines(p: Path) -> list[int]:
    lines = [ln for f in rotated_files(p) for ln in gzip.open(f, "rt")]
    lines += p.read_text().splitlines(keepends=True)
    assert all(ln.endswith("\n") for ln in lines)
    return [json.loads(ln)["n"] for ln in lines]


def test_size_rotation_keeps_every_line(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    log = EventLog(p, rotate=EventsRotateConfig(max_size=2000, keep=1000))
    for i in range(2000):
        log.emit("x", n=i)
    log.reopen()
    assert len(rotated_files(p)) > 1
    assert _all_lines(p) == list(range(2000))


def test_keep_prunes_oldest(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    log = EventLog(p, rotate=EventsRotateConfig(max_size=500, keep=3))
    for i in range(500):
        log.emit("x", n=i)
    assert len(rotated_files(p)) == 3
    assert _all_lines(p)[-1] == 499


def test_rename_then_reopen(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    log = EventLog(p)
    log.emit("x", n=0)
    os.rename(p, tmp_path / "moved")
    log.emit("x", n=1)  # still goes to the moved file, as with logrotate
    log.reopen()        # what SIGUSR1 / SIGHUP call
    log.emit("x", n=2)
    moved = [json.loads(ln)["n"] for ln in (tmp_path / "moved").read_text().splitlines()]
    assert moved == [0, 1]
    assert [json.loads(ln)["n"] for ln in p.read_text().splitlines()] == [2]
