"""What the reputation guard costs per delivery outcome, in process: the events listener
(classify and count) and the periodic flush of the counts into the store.

    .venv/bin/python bench/reputation.py [--events 200000] [--tenants 50]

Target (issue 17): breakers under 3% of throughput. An outcome costs the listener once;
compare with the daemon's CPU per relayed message (bench/README: about 1 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mta.clock import ManualClock  # noqa: E402
from mta.config.reputation import ReputationConfig  # noqa: E402
from mta.policy.kv import MemoryKV, kv_for  # noqa: E402
from mta.reputation.guard import ReputationGuard  # noqa: E402


class _Admin:  # the guard reads only the engine's clock on this path
    class engine:
        clock = ManualClock()


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--tenants", type=int, default=50)
    args = ap.parse_args()
    kinds = [("delivered", None)] * 90 + [("bounced", "invalid_recipient")] * 5 + [
        ("deferred", "spam_block")] * 5
    records = [{"event": kinds[i % 100][0], "category": kinds[i % 100][1],
                "tenant": f"t{i % args.tenants}", "id": "x"} for i in range(args.events)]
    guard = ReputationGuard(ReputationConfig(), MemoryKV(), _Admin())
    t0 = time.perf_counter()
    for r in records:
        guard.on_event(r)
    per = (time.perf_counter() - t0) / args.events
    print(f"listener: {per * 1e6:.2f} us per outcome event")
    from mta.policy.sqlite_store import SqliteStore

    with tempfile.TemporaryDirectory() as tmp:
        store = await SqliteStore.open(Path(tmp) / "policy.db")
        guard.kv = guard.counts.kv = kv_for(store)
        t0 = time.perf_counter()
        await guard.counts.flush()
        took = time.perf_counter() - t0
        await store.aclose()
    print(f"flush into policy.db: {took * 1000:.1f} ms for {args.tenants} tenants "
          f"(once per [reputation] interval, on the store's thread)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
