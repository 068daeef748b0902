"""Smoke test of bench/suppress.py with tiny numbers: it imports, checks and reports (no
performance assertions: the numbers are the benchmark's business)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_suppress_bench_reports_import_and_check_cost(tmp_path: Path) -> None:
    out = tmp_path / "suppress.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "suppress.py"), "--entries",
                           "2000", "--checks", "200", "--json", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert doc["entries"] == 2000 and doc["hits"] == 200
    assert "RCPT check per recipient" in proc.stdout


def test_suppress_ingest_bench_imports_and_measures_both_daemons() -> None:
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "suppress_ingest.py"),
                           "--entries", "2000", "-n", "60", "-c", "4", "--runs", "1"],
                          capture_output=True, text=True, timeout=240, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "import: 2,000 entries" in proc.stdout and "cost" in proc.stdout, proc.stdout
