"""Smoke test of bench/policy.py: both daemons start, take the load, every message is
accepted in both modes, and the comparison is printed and written. No performance
assertions (the numbers are the benchmark's business, not the test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_policy_bench_compares_both_modes_with_tiny_numbers(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "policy.py"), "--messages", "20",
         "--concurrency", "2", "--runs", "1", "--domains", "5", "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "throughput ratio policy/none:" in proc.stdout
    doc = json.loads(out.read_text())
    assert set(doc["rounds"]) == {"none", "policy"}
    for rounds in doc["rounds"].values():
        assert [r["accepted"] for r in rounds] == [20]
        assert all(r["cpu_ms_per_msg"] > 0 for r in rounds)
    assert doc["ratio"] > 0
