"""Ingest with one worker against two (`[server] workers`), both on one real Redis.

    .venv/bin/python bench/workers.py [--messages 4000] [--concurrency 40] [--runs 2]

Starts a redis-server (no persistence) on a free port and two `mta serve` daemons on it
(tests/support/daemon.py, loopback, accepted mail stays queued), one with workers = 1 and
one with workers = 2, then alternates bench/ingest.py rounds (new connection per message,
so the kernel spreads them over the workers) after a warm-up. Prints msg/s and CPU ms
per message of the whole process tree (supervisor and workers).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import ingest  # noqa: E402
from content import _children_cpu  # noqa: E402

from tests.support.daemon import MtaProcess, free_port  # noqa: E402
from tests.support.redis import REDIS_SERVER, _ping  # noqa: E402


def _round(mta: MtaProcess, args: argparse.Namespace, n: int) -> dict:
    assert mta.proc is not None
    pid = mta.proc.pid
    la = argparse.Namespace(host="127.0.0.1", port=mta.smtp_port, messages=n,
                            concurrency=args.concurrency, size=1024, reuse=False, rcpts=1,
                            domain="bench.test", domain_count=100, stamp=False)
    stats = ingest.Stats()
    cpu0 = ingest.proc_cpu(pid) + _children_cpu(pid)
    t0 = time.perf_counter()
    ingest._runner()(ingest.run_load(la, stats, False))
    elapsed = time.perf_counter() - t0
    cpu = ingest.proc_cpu(pid) + _children_cpu(pid) - cpu0
    if stats.errors:
        raise RuntimeError(f"{stats.errors} errors: {stats.last_error}")
    return {"rate": stats.accepted / elapsed,
            "cpu_ms": cpu / max(stats.accepted, 1) * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=4000)
    ap.add_argument("-c", "--concurrency", type=int, default=40)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args(argv)
    port = free_port()
    redis = subprocess.Popen([REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port),
                              "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while not _ping(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    rounds: dict[int, list[dict]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="mta-bench-workers-") as tmp:
        daemons: dict[int, MtaProcess] = {}
        try:
            for n in (1, 2):
                work = Path(tmp) / f"w{n}"
                work.mkdir()
                m = MtaProcess(work, f'[cluster]\nredis_url = "redis://127.0.0.1:{port}/{n}"\n',
                               delivery_extra='retry = ["1h"]\n')
                m.config_path.write_text(m.config_path.read_text().replace(
                    "[server]\n", f"[server]\nworkers = {n}\n", 1))
                daemons[n] = m.start(timeout=60)
                while n > 1 and f"mta ready: {n} workers" not in m.stderr:
                    time.sleep(0.1)
                _round(m, args, max(args.messages // 5, 1))
            for run in range(args.runs):
                for n in (1, 2):
                    r = _round(daemons[n], args, args.messages)
                    rounds[n].append(r)
                    print(f"round {run + 1} workers={n}: {r['rate']:7.0f} msg/s, "
                          f"{r['cpu_ms']:.3f} ms CPU/msg", flush=True)
        finally:
            for m in daemons.values():
                m.kill()
            redis.kill()
    med = {n: {k: statistics.median(r[k] for r in rounds[n]) for k in ("rate", "cpu_ms")}
           for n in rounds}
    print()
    for n in (1, 2):
        print(f"workers={n}: {med[n]['rate']:7.0f} msg/s, {med[n]['cpu_ms']:.3f} ms CPU/msg")
    print(f"workers=2 / workers=1: {med[2]['rate'] / med[1]['rate']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
