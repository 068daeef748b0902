"""What a large suppression list costs the real daemon: ingest throughput with 1,000,000
entries on the global list against none. Target (issue 16): the RCPT check costs under 3%.

    .venv/bin/python bench/suppress_ingest.py [--entries 1000000] [--messages 3000]
        [--concurrency 20] [--runs 2] [--json FILE]

Starts `mta serve` twice (tests/support/daemon.py, loopback, spool in a temp dir, accepted
mail stays queued: RCPT is where the check runs), imports --entries generated addresses
into one of them with `mta suppress import` (timed: the operator's import path, CSV over
the admin API), then sends bench/ingest.py's load (pipelined, reused sessions, one
recipient per message, none of them listed: every RCPT looks the list up and misses, the
common case) to each in alternating rounds after a warm-up. Prints msg/s, the daemon's CPU
per message and the cost as 1 - listed / empty.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

from content import load  # noqa: E402  (one measured round against one daemon)

from tests.support.daemon import MtaProcess  # noqa: E402

MODES = ("empty", "listed")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("-n", "--messages", type=int, default=3000, help="per round and mode")
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("-s", "--size", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--json", help="write the rounds and medians here")
    args = ap.parse_args(argv)
    rounds: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="mta-bench-suppress-") as tmp:
        daemons: dict[str, MtaProcess] = {}
        try:
            for mode in MODES:
                work = Path(tmp) / mode
                work.mkdir()
                daemons[mode] = MtaProcess(work, "", delivery_extra='retry = ["1h"]\n'
                                           ).start(timeout=60)
            csv = Path(tmp) / "list.csv"
            with csv.open("w") as f:
                f.write("address,reason\n")
                for i in range(args.entries):
                    f.write(f"user{i}@listed{i % 5000}.example,import\n")
            t0 = time.perf_counter()
            out = daemons["listed"].cli("suppress", "import", str(csv), "--scope", "global",
                                        timeout=600)
            took = time.perf_counter() - t0
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
            print(f"import: {args.entries:,} entries in {took:.1f} s "
                  f"({args.entries / took:,.0f}/s) through `mta suppress import`", flush=True)
            for mode in MODES:
                load(daemons[mode], args, max(args.messages // 5, 1))
            for run in range(args.runs):
                for mode in MODES:
                    r = load(daemons[mode], args, args.messages)
                    rounds[mode].append(r)
                    print(f"round {run + 1} {mode:<6}: {r['rate']:8.0f} msg/s, daemon CPU "
                          f"{r['cpu_ms_per_msg']:.3f} ms/msg", flush=True)
        finally:
            for mta in daemons.values():
                mta.kill()
    med = {m: {k: statistics.median(r[k] for r in rounds[m])
               for k in ("rate", "cpu_ms_per_msg")} for m in MODES}
    print()
    for m in MODES:
        print(f"{m:<8}{med[m]['rate']:>10.0f} msg/s {med[m]['cpu_ms_per_msg']:>8.3f} ms/msg")
    cost = 1 - med["listed"]["rate"] / med["empty"]["rate"]
    cpu = med["listed"]["cpu_ms_per_msg"] - med["empty"]["cpu_ms_per_msg"]
    print(f"{args.entries:,} entries: cost {cost:.1%} of ingest throughput, "
          f"{cpu * 1000:+.0f} us of daemon CPU per message (target < 3%: "
          f"{'met' if cost < 0.03 else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds,
                                               "median": med, "cost": cost}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
