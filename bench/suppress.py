"""Suppression lists: how fast a large list imports, and what the RCPT check costs.

    .venv/bin/python bench/suppress.py [--entries 1000000] [--checks 20000]
        [--redis redis://127.0.0.1:6379/15] [--json FILE]

In this process, on a real policy.db in a temp dir (made by the real policy store), or on
the Redis given (its database is FLUSHED first): imports --entries generated addresses
into one tenant's list through `Suppressions.import_entries` (the path of `mta suppress
import` and POST /api/v1/suppressions/import after parsing), then times `check` of
--checks recipients on the list and --checks not on it, through a tenant chain of three scopes
(sub-account, tenant, global), one at a time as RCPT asks. Prints entries/s for the import
and microseconds per check, and the check with no list loaded (the embedded store's fast
path: the chain has no entries, so RCPT makes no lookup at all).

Targets (issue 16): import >= 100,000 entries/s; RCPT check under 3% of ingest throughput
(bench/ingest.py's messages/s on the same machine times the check's cost per recipient).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from mta.config import Config  # noqa: E402
from mta.config.sections import ClusterConfig  # noqa: E402
from mta.policy.clock import SystemClock  # noqa: E402
from mta.policy.engine import PolicyTxn  # noqa: E402
from mta.policy.sqlite_store import SqliteStore  # noqa: E402
from mta.policy.tenants import Tenant  # noqa: E402
from mta.suppress import Entry, Suppressions  # noqa: E402

CHAIN = ["sub", "shop", "global"]


async def _open(args: argparse.Namespace, workdir: Path):
    """(the policy store that made policy.db or None, Suppressions as the daemon opens it)"""
    store = None
    if args.redis:
        import redis.asyncio as aioredis

        async with aioredis.from_url(args.redis) as client:
            await client.flushdb()
        cfg = Config(cluster=ClusterConfig(redis_url=args.redis))
    else:
        store = await SqliteStore.open(workdir / "policy.db")
        cfg = Config()
    return store, await Suppressions.open(cfg, workdir, clock=SystemClock())


async def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-suppress-") as tmp:
        store, lists = await _open(args, Path(tmp))
        try:
            # The fast path first, with nothing on any list of the chain.
            txn = PolicyTxn("sub", "a@shop.test", chain=tuple(Tenant(name=n) for n in
                                                             CHAIN[:2]))
            started = time.perf_counter()
            for i in range(args.checks):
                answer = lists.screen_rcpt(txn, f"r{i}@dest.test", lambda: None)
                if asyncio.iscoroutine(answer):
                    await answer
            empty_us = (time.perf_counter() - started) / args.checks * 1e6

            now = time.time()
            entries = (Entry("shop", f"user{i}@d{i % 1000}.test", "import", "bench", now)
                       for i in range(args.entries))
            started = time.perf_counter()
            n = await lists.import_entries(entries)
            import_s = time.perf_counter() - started

            async def checks(on_list: bool) -> tuple[float, int]:
                """us per check of --checks recipients all on the list or all not."""
                hits = 0
                started = time.perf_counter()
                for i in range(args.checks):
                    j = i * 7919 % args.entries
                    rcpt = (f"user{j}@d{j % 1000}.test" if on_list else
                            f"nobody{i}@dest.test")
                    answer = lists.screen_rcpt(txn, rcpt, lambda: None)
                    if asyncio.iscoroutine(answer) and await answer is not None:
                        hits += 1
                return (time.perf_counter() - started) / args.checks * 1e6, hits

            miss_us, _ = await checks(False)
            hit_us, hits = await checks(True)
        finally:
            await lists.aclose()
            if store is not None:
                await store.aclose()
    return {"backend": "redis" if args.redis else "sqlite", "entries": n,
            "import_seconds": round(import_s, 3),
            "import_per_second": round(n / import_s), "checks": args.checks,
            "hits": hits, "check_us_not_listed": round(miss_us, 2),
            "check_us_listed": round(hit_us, 1),
            "check_us_no_list": round(empty_us, 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--entries", type=int, default=1_000_000)
    p.add_argument("--checks", type=int, default=20_000)
    p.add_argument("--redis", default=None, help="a Redis URL (its database is flushed)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(f"{result['backend']}: imported {result['entries']:,} entries in "
          f"{result['import_seconds']:.2f} s ({result['import_per_second']:,}/s)")
    print(f"RCPT check per recipient: {result['check_us_not_listed']:.2f} us if not listed, "
          f"{result['check_us_listed']:.1f} us if listed ({result['hits']:,} of "
          f"{result['checks']:,} found); {result['check_us_no_list']:.2f} us with no list in "
          "the chain")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
