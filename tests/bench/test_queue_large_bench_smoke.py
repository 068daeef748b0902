"""Smoke test of bench/queue_large.py with a small queue: it fills, restarts, pages every
message and reports (no performance assertions: the numbers are the benchmark's business)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_queue_large_bench_pages_through_every_queued_message(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "queue_large.py"), "-n", "500",
                           "--domains", "20", "--limit", "100", "--dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restart to ready:" in proc.stdout
    assert re.search(r"all 500 messages in 5 pages of 100", proc.stdout), proc.stdout
