"""HTTP injection throughput: N messages over C concurrent aiohttp requests.

POSTs JSON messages to /api/v1/messages with a tenant API key and reports accepted
messages/s and p50/p99 latency (request sent -> 202). Every 202 means the message is in
the spool and fsynced, so this measures the same durable path as SMTP ingest.

Against a running daemon (a tenant with `api_keys = ["KEY"]` in its config):

    .venv/bin/python bench/http_inject.py --url http://127.0.0.1:8025 --key KEY -n 5000 -c 50

Self-contained: `--serve` starts a child process running the HTTP app over a real Spool
and Ingress (no delivery: messages only queue) in a temporary directory, on uvloop:

    .venv/bin/python bench/http_inject.py --serve -n 5000 -c 50 -s 1024
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TIMEOUT = 30.0
BENCH_KEY = "bench-key"


def _message(size: int, i: int) -> dict:
    text = ("x" * 76 + "\n") * max(size // 77, 1)
    return {"from": "bench@load.test", "to": [f"sink{i % 100}@dest.test"],
            "subject": f"bench {i}", "text": text}


async def _run(url: str, key: str, n: int, c: int, size: int) -> int:
    import aiohttp

    bodies = [json.dumps(_message(size, i)).encode() for i in range(min(n, 100))]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    next_i = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal next_i
        while next_i < n:
            i = next_i
            next_i += 1
            t0 = time.perf_counter()
            try:
                async with session.post(url + "/api/v1/messages", data=bodies[i % len(bodies)],
                                        headers=headers) as r:
                    body = await r.read()
                    if r.status == 202:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        code = json.loads(body).get("error", {}).get("code", str(r.status))
                        errors[code] = errors.get(code, 0) + 1
            except (aiohttp.ClientError, TimeoutError) as e:
                errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1

    conn = aiohttp.TCPConnector(limit=c)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(c)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    ok = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(ok - 1, int(p * ok))] * 1000 if ok else float("nan")

    print(f"http inject: {ok}/{n} accepted in {elapsed:.2f}s = {ok / elapsed:,.0f} msg/s "
          f"(c={c}, ~{size} B); p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms"
          + (f"; errors {errors}" if errors else ""))
    return 0 if ok == n else 1


async def _serve(port: int, spool_dir: Path) -> None:
    """The server side of --serve: make_app over a real Spool and Ingress."""
    from aiohttp import web

    from mta.http.app import Limits, make_app
    from mta.ingress import Ingress
    from mta.observe.events import EventLog
    from mta.observe.metrics import Metrics
    from mta.queue import Spool

    events = EventLog(spool_dir / "events.jsonl")
    metrics = Metrics(tenants=["bench"])
    metrics.attach(events)
    spool = await Spool.open(spool_dir / "spool")
    app = make_app(admin_token="", ingress=Ingress(spool=spool, events=events),
                   metrics=metrics, api_keys={BENCH_KEY: "bench"},
                   limits=Limits(hostname="bench.test"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print(f"READY pid={os.getpid()} port={port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await spool.close()
        await events.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8025")
    ap.add_argument("--key", default=BENCH_KEY)
    ap.add_argument("-n", type=int, default=5000, help="messages")
    ap.add_argument("-c", type=int, default=50, help="concurrent requests")
    ap.add_argument("-s", type=int, default=1024, help="approximate text size in bytes")
    ap.add_argument("--serve", action="store_true", help="start a bench server child")
    ap.add_argument("--server-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--server-dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import uvloop

    if args.server_port:
        uvloop.run(_serve(args.server_port, args.server_dir))
        return 0
    if not args.serve:
        return uvloop.run(_run(args.url, args.key, args.n, args.c, args.s))
    with tempfile.TemporaryDirectory(prefix="http-inject-") as tmp:
        port = _free_port()
        child = subprocess.Popen(
            [sys.executable, __file__, "--server-port", str(port), "--server-dir", tmp],
            stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
        try:
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line.startswith("READY"):
                print(f"bench server did not start: {line!r}", file=sys.stderr)
                return 1
            return uvloop.run(_run(f"http://127.0.0.1:{port}", BENCH_KEY, args.n, args.c,
                                   args.s))
        finally:
            child.terminate()
            child.wait(10)


if __name__ == "__main__":
    sys.exit(main())
