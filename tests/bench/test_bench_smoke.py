"""Smoke test of `make bench` (bench/run.py): one small relay run end to end through the
real pieces (Unbound, the sinks, `mta serve`, the load generator), and the same through a
private Postfix when Postfix is installed. No performance assertions: only that the run
completes, every message reaches the sinks, and the JSON, table and plots are written."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"


def _bench(tmp_path: Path, *extra: str) -> dict:
    proc = subprocess.run(
        [sys.executable, str(RUN), "--scenario", "relay-1k", "--messages", "30",
         "--connections", "4", "--runs", "1", "--results", str(tmp_path / "results"),
         *extra],
        capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [path] = (tmp_path / "results").glob("*.json")
    doc = json.loads(path.read_text())
    assert "| relay-1k | mta |" in proc.stdout
    return doc


def _check(run: dict) -> None:
    assert run["accepted"] == 30 and run["errors"] == 0
    assert run["complete"] and run["sink_stored"] == 30
    # CPU comes from /proc in clock ticks (10 ms): 30 messages of Postfix can take less
    # than one, so 0 is a reading, not a failure.
    assert run["e2e_rate"] > 0 and run["cpu_per_1k"] >= 0 and run["peak_rss_mb"] > 0


def test_relay_run_delivers_every_message_and_writes_results(tmp_path: Path) -> None:
    doc = _bench(tmp_path)
    [run] = doc["results"]
    assert run["mta"] == "mta"
    _check(run)
    assert doc["machine"]["cores"] >= 1
    pytest.importorskip("matplotlib")
    assert list((tmp_path / "results").glob("*/summary.png"))


def test_relay_run_under_policy_charges_every_message(tmp_path: Path) -> None:
    # bench/run.py --policy: the relayed tenant is prepaid, on quotas, under a licence;
    # --peer plain runs mta without it, alternated, for issue 5's cost ratio.
    (tmp_path / "work").mkdir()
    doc = _bench(tmp_path, "--policy", "--peer", "plain", "--keep",
                 "--tmp", str(tmp_path / "work"))
    runs = {r["mta"]: r for r in doc["results"]}
    assert set(runs) == {"mta", "mta-plain"}
    for run in runs.values():
        _check(run)
    [md] = (tmp_path / "results").glob("*.md")
    assert "| mta/mta-plain |" in md.read_text()
    dbs = {"plain" if "-mta-plain-" in str(db) else "policy": db
           for db in (tmp_path / "work").glob("*/relay-1k-mta-*/spool/policy.db")}
    for side, charged in (("policy", 30), ("plain", 0)):
        with sqlite3.connect(dbs[side]) as c:  # one credit per delivered recipient
            assert c.execute("SELECT count(*) FROM ledger WHERE kind='reserve'"
                             ).fetchone() == (charged,)


@pytest.mark.skipif(not Path("/usr/sbin/postfix").exists(),
                    reason="Postfix is not installed (make bench --peer postfix installs it)")
def test_postfix_peer_relays_to_the_same_sinks_and_is_stopped(tmp_path: Path) -> None:
    before = _postfix_masters()
    doc = _bench(tmp_path, "--peer", "postfix")
    runs = {r["mta"]: r for r in doc["results"]}
    assert set(runs) == {"mta", "postfix"}
    for run in runs.values():
        _check(run)
    # The private instance was stopped: no Postfix master more than before.
    assert _postfix_masters() <= before


def _postfix_masters() -> set[int]:
    """Live (not zombie) processes named `master`."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,comm="], capture_output=True, text=True,
                         timeout=10).stdout
    return {int(pid) for pid, stat, comm in (line.split(None, 2) for line in out.splitlines())
            if comm.strip() == "master" and not stat.startswith("Z")}
