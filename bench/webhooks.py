"""Webhook delivery under load: event-to-receiver latency and the cost to throughput.
Target (issue 18): 1,000 events/s to a local receiver, cost under 5%.

    .venv/bin/python bench/webhooks.py [--messages 3000] [--concurrency 20] [--runs 2]
        [--json FILE]

Starts `mta serve` twice (tests/support/daemon.py, loopback, spool in a temp dir, accepted
mail stays queued) and a webhook receiver in its own process (aiohttp, verifying every
request with the `standardwebhooks` library, as a platform would):

    none    webhooks on, no endpoint: events are not kept
    hooks   one endpoint for every event: each accepted message's `received` event is
            batched ([webhooks] defaults: 100 events or 200 ms), written to the outbox,
            signed and posted

Messages are sent by bench/ingest.py's load generator (pipelined, reused sessions) in
alternating rounds after a warm-up each. Prints msg/s (= events/s: one recipient each),
the daemon's CPU ms per message, the p50/p99 delay from an event's time to its arrival at
the receiver, and the cost of `hooks` as 1 - its throughput / none's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import ingest  # noqa: E402  (bench/ingest.py: the load generator)
from content import load  # noqa: E402  (one measured round against one daemon)

from tests.support.daemon import MtaProcess, free_port  # noqa: E402

MODES = ("none", "hooks")
DELIVERY = 'retry = ["1h"]\n'


def _receive(port: int, secret_q: multiprocessing.Queue, out_q: multiprocessing.Queue) -> None:
    """The receiver process: verifies, records arrival minus event time, reports on stop."""
    import asyncio

    from aiohttp import web
    from standardwebhooks import Webhook

    delays: list[float] = []
    state = {"hook": None, "bad": 0, "posts": 0}

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        try:
            doc = state["hook"].verify(body, dict(request.headers))
        except Exception:
            state["bad"] += 1
            return web.Response(status=401)
        state["posts"] += 1
        delays.extend(now - e["time"] for e in doc["data"]["events"]
                      if e.get("event") == "received")
        return web.Response(status=204)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        loop = asyncio.get_running_loop()
        state["hook"] = Webhook(await loop.run_in_executor(None, secret_q.get))
        while True:
            cmd = await loop.run_in_executor(None, secret_q.get)
            if cmd == "stop":
                break
            out_q.put({"delays": list(delays), "bad": state["bad"], "posts": state["posts"]})
            delays.clear()
            state["posts"] = 0
        await runner.cleanup()

    asyncio.run(main())


def _pct(values: list[float], p: float) -> float:
    return ingest.percentile(sorted(values), p) if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=3000, help="per round and mode")
    ap.add_argument("-c", "--concurrency", type=int, default=20, help="SMTP sessions")
    ap.add_argument("-s", "--size", type=int, default=2000, help="message size in bytes")
    ap.add_argument("--runs", type=int, default=2, help="measured rounds per mode")
    ap.add_argument("--json", help="write the rounds and medians here")
    args = ap.parse_args(argv)
    port = free_port()
    ctl: multiprocessing.Queue = multiprocessing.Queue()
    out: multiprocessing.Queue = multiprocessing.Queue()
    rx = multiprocessing.Process(target=_receive, args=(port, ctl, out), daemon=True)
    rx.start()
    rounds: dict[str, list[dict]] = {m: [] for m in MODES}
    warmup = max(args.messages // 5, 1)
    with tempfile.TemporaryDirectory(prefix="mta-bench-webhooks-") as tmp:
        daemons: dict[str, MtaProcess] = {}
        try:
            for mode in MODES:
                work = Path(tmp) / mode
                work.mkdir()
                mta = MtaProcess(work, "", delivery_extra=DELIVERY)
                daemons[mode] = mta.start(timeout=60)
                if mode == "hooks":
                    added = mta.cli("webhooks", "add", f"http://127.0.0.1:{port}/hook",
                                    "--json")
                    if added.returncode != 0:
                        raise RuntimeError(added.stderr)
                    ctl.put(json.loads(added.stdout)["secret"])
                load(mta, args, warmup)
            time.sleep(1)
            ctl.put("report")
            out.get(timeout=30)  # the warm-up's events: not measured
            for run in range(args.runs):
                for mode in MODES:
                    r = load(daemons[mode], args, args.messages)
                    if mode == "hooks":
                        time.sleep(1.0)  # the last batch's wait, then its POST
                        ctl.put("report")
                        got = out.get(timeout=30)
                        r |= {"events": len(got["delays"]), "bad": got["bad"],
                              "posts": got["posts"], "p50": _pct(got["delays"], 50),
                              "p99": _pct(got["delays"], 99)}
                    rounds[mode].append(r)
                    extra = (f", {r['events']} events in {r['posts']} posts, delay p50 "
                             f"{r['p50'] * 1000:.0f} ms p99 {r['p99'] * 1000:.0f} ms"
                             if mode == "hooks" else "")
                    print(f"round {run + 1} {mode:<6}: {r['rate']:8.0f} msg/s, daemon CPU "
                          f"{r['cpu_ms_per_msg']:.3f} ms/msg{extra}", flush=True)
        finally:
            for mta in daemons.values():
                mta.kill()
            ctl.put("stop")
            rx.join(10)
    med = {m: {k: statistics.median(r[k] for r in rounds[m])
               for k in ("rate", "cpu_ms_per_msg")} for m in MODES}
    hooks = rounds["hooks"]
    print()
    print(f"{'mode':<8}{'msg/s':>10}{'daemon ms':>11}   ({args.messages} messages x "
          f"{args.runs} rounds, {args.concurrency} sessions, {args.size} B)")
    for m in MODES:
        print(f"{m:<8}{med[m]['rate']:>10.0f}{med[m]['cpu_ms_per_msg']:>11.3f}")
    lost = sum(args.messages - r["events"] for r in hooks)
    print(f"event -> receiver delay: p50 {statistics.median(r['p50'] for r in hooks) * 1000:.0f}"
          f" ms, p99 {max(r['p99'] for r in hooks) * 1000:.0f} ms (worst round); "
          f"{lost} event(s) missing, {sum(r['bad'] for r in hooks)} bad signature(s)")
    cost = 1 - med["hooks"]["rate"] / med["none"]["rate"]
    print(f"hooks: costs {cost:.1%} of throughput (target < 5%: "
          f"{'met' if cost < 0.05 else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rounds": rounds,
                                               "median": med, "cost": cost}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
