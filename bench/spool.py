"""Spool put throughput: how many durable (fsynced) puts per second group commit reaches.

    .venv/bin/python bench/spool.py [--concurrency 20 200] [--seconds 5] [--size 1024]
                                    [--dir DIR] [--max-batch 512]

Each putter loops `await spool.put(envelope, body)` for the duration; the spool lives in a
fresh directory on the given filesystem (default: a temporary directory), so fsyncs are
real. Prints puts/s, mean commit size and p50/p99 put latency per concurrency level.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import uvloop

from mta.queue.envelope import Envelope, Recipient
from mta.queue.spool import Spool


async def run(directory: Path, concurrency: int, seconds: float, size: int,
              max_batch: int) -> dict[str, float]:
    spool = await Spool.open(directory, max_batch=max_batch)
    env = Envelope("bench", "sender@example.org",
                   [Recipient("user@example.com")], client_ip="127.0.0.1")
    body = b"x" * size
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def putter() -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await spool.put(env, body)
            latencies.append(time.perf_counter() - t0)

    t_start = time.monotonic()
    await asyncio.gather(*(putter() for _ in range(concurrency)))
    elapsed = time.monotonic() - t_start
    commits = spool.commits
    await spool.close()
    latencies.sort()
    return {
        "puts": len(latencies),
        "puts_per_s": len(latencies) / elapsed,
        "mean_batch": len(latencies) / max(commits, 1),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[20, 200])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--max-batch", type=int, default=512)
    ap.add_argument("--dir", type=Path, default=None, help="parent directory for the spool")
    args = ap.parse_args()
    for c in args.concurrency:
        directory = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=args.dir))
        try:
            r = await run(directory, c, args.seconds, args.size, args.max_batch)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        print(f"concurrency={c:4d} body={args.size}B  {r['puts_per_s']:8.0f} puts/s  "
              f"mean commit {r['mean_batch']:6.1f} puts  p50 {r['p50_ms']:6.2f} ms  "
              f"p99 {r['p99_ms']:6.2f} ms  ({r['puts']} puts)")


if __name__ == "__main__":
    uvloop.run(main())
