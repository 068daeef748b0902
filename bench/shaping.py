"""CPU cost of one throttle decision (memory store) with 10,000 distinct paths.

    .venv/bin/python bench/shaping.py [--paths 10000] [--decisions 1000000]

Reports ns per decision for: the GCRA core (`try_acquire_sync`), the async interface the
dispatcher awaits (`await try_acquire`), and the Shaper's `message_wait` (adaptive scale
lookup + throttle). Paths are visited round-robin with a clock that advances 1 us per
decision, so counters mix admits and refusals the way a busy dispatcher sees them.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from mta.clock import ManualClock
from mta.config import parse_config
from mta.shaping.rate import parse_rate
from mta.shaping.shaper import Shaper
from mta.shaping.throttle import MemoryThrottle


def bench_sync(paths: list[str], n: int) -> float:
    th, rate, now = MemoryThrottle(), parse_rate("50/s burst 5"), 1_700_000_000.0
    admitted = 0
    t0 = time.perf_counter()
    for i in range(n):
        if th.try_acquire_sync(paths[i % len(paths)], rate, now + i * 1e-6) == 0.0:
            admitted += 1
    dt = time.perf_counter() - t0
    print(f"  sync core:      {dt / n * 1e9:8.0f} ns/decision  ({admitted / n:.0%} admitted, "
          f"{len(th)} counters)")
    return dt / n


async def bench_async(paths: list[str], n: int) -> float:
    th, rate, now = MemoryThrottle(), parse_rate("50/s burst 5"), 1_700_000_000.0
    t0 = time.perf_counter()
    for i in range(n):
        await th.try_acquire(paths[i % len(paths)], rate, now + i * 1e-6)
    dt = time.perf_counter() - t0
    print(f"  await store:    {dt / n * 1e9:8.0f} ns/decision")
    return dt / n


async def bench_shaper(n_paths: int, n: int) -> float:
    cfg = parse_config('[shaping.default]\nmax_message_rate = "50/s burst 5"\n', "bench")
    clock = ManualClock()
    sh = Shaper(cfg, clock=clock)
    paths = [sh.path("ip1", f"site{i}") for i in range(n_paths)]
    t0 = time.perf_counter()
    for i in range(n):
        clock.advance(1e-6)
        await sh.message_wait(paths[i % n_paths])
    dt = time.perf_counter() - t0
    print(f"  shaper.message_wait: {dt / n * 1e9:5.0f} ns/decision")
    return dt / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--decisions", type=int, default=1_000_000)
    a = ap.parse_args()
    paths = [f"ip{i % 8}->site{i}" for i in range(a.paths)]
    print(f"{a.decisions:,} decisions over {a.paths:,} paths (memory store)")
    bench_sync(paths, a.decisions)
    asyncio.run(bench_async(paths, a.decisions))
    asyncio.run(bench_shaper(a.paths, a.decisions))


if __name__ == "__main__":
    main()
