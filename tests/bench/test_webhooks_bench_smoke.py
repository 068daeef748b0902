"""Smoke test of bench/webhooks.py with a few messages: every event reaches the receiver
with a good signature (no performance assertions: the numbers are the benchmark's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_webhooks_bench_delivers_every_event_signed() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "webhooks.py"), "-n", "100",
                           "--runs", "1", "-c", "4"],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 event(s) missing, 0 bad signature(s)" in proc.stdout, proc.stdout
