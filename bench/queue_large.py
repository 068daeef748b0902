"""A large queue: restart-to-ready time, RSS and `mta queue list` paging with N queued messages.

    .venv/bin/python bench/queue_large.py [-n 1000000] [--domains 10000] [--dir DIR]

Fills a fresh spool with N one-recipient messages (1 KB) to `--domains` destination
domains through `Spool.put` (group commit, fsync per group, as ingress writes them), moves
every recipient's next attempt a day ahead (a queue waiting on retries, as after an outage),
then starts `mta serve` on it and measures:

- restart to ready: spawn until the SMTP greeting (the daemon rebuilds the delivery
  schedule from the spool before it listens);
- RSS of the daemon once ready (VmRSS, and VmHWM: the peak while restoring);
- `mta queue list` through the admin API: the first page, a page after a cursor deep in
  the queue, and every message paged through at --limit.

Issue 19's targets: RSS under 1 GiB, ready under 10 s with 1,000,000 queued.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO)]

import uvloop  # noqa: E402

from mta.queue.envelope import Envelope, Recipient  # noqa: E402
from mta.queue.spool import Spool  # noqa: E402
from tests.support.daemon import ADMIN_TOKEN, MtaProcess  # noqa: E402


async def fill(spool_dir: Path, n: int, domains: int, concurrency: int = 256) -> float:
    """N messages in the spool; seconds taken."""
    spool = await Spool.open(spool_dir, max_batch=1024)
    body = (b"From: bench@example.org\r\nTo: u@d.test\r\nSubject: queued\r\n\r\n"
            + b"x" * 960 + b"\r\n")
    counter = iter(range(n))
    t0 = time.monotonic()

    async def putter() -> None:
        for i in counter:
            env = Envelope("default", "bench@example.org",
                           [Recipient(f"u{i}@d{i % domains}.test")], client_ip="127.0.0.1")
            await spool.put(env, body)

    await asyncio.gather(*(putter() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    await spool.close()
    return elapsed


def defer_all(spool_dir: Path) -> None:
    """Every recipient waits a day: the daemon restores the schedule and sends nothing."""
    for db in spool_dir.glob("spool-*.sqlite"):
        con = sqlite3.connect(db)
        with con:
            con.execute("UPDATE recipients SET next_attempt = ?, attempts = 1",
                        (time.time() + 86400,))
        con.close()


def status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) // 1024  # MiB
    return out


def get(port: int, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def timed(fn, *args):
    t0 = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=1_000_000)
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--limit", type=int, default=1000, help="page size of the paging run")
    ap.add_argument("--dir", type=Path, default=None, help="parent of the work directory")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="queue-large-", dir=args.dir))
    try:
        spool_dir = work / "spool"
        spool_dir.mkdir()
        fill_s = uvloop.run(fill(spool_dir, args.messages, args.domains))
        defer_all(spool_dir)
        size = sum(p.stat().st_size for p in spool_dir.iterdir() if p.is_file())
        print(f"filled {args.messages} messages in {fill_s:.1f} s "
              f"({args.messages / fill_s:,.0f}/s), spool {size / 2**20:,.0f} MiB")

        mta = MtaProcess(work)
        t0 = time.monotonic()
        mta.start(timeout=600)
        ready_s = time.monotonic() - t0
        assert mta.proc is not None
        mem = status(mta.proc.pid)
        print(f"restart to ready: {ready_s:.2f} s; RSS {mem['VmRSS']} MiB "
              f"(peak {mem['VmHWM']} MiB)")
        try:
            first, first_s = timed(get, mta.http_port, "/api/v1/admin/queue?limit=100")
            ids = [m["id"] for m in first["messages"]]
            # A cursor deep in the queue: the id of the message at about 90%.
            con = sqlite3.connect(next(spool_dir.glob("spool-*.sqlite")))
            row = con.execute("SELECT id FROM messages ORDER BY id LIMIT 1 OFFSET ?",
                              (int(args.messages * 0.9),)).fetchone()
            con.close()
            deep_after = row[0] if row else ids[-1]
            _, deep_s = timed(get, mta.http_port,
                              f"/api/v1/admin/queue?limit=100&after={deep_after}")
            seen, pages, after = 0, 0, ""
            t1 = time.perf_counter()
            while True:
                page = get(mta.http_port, f"/api/v1/admin/queue?limit={args.limit}&after={after}")
                msgs = page["messages"]
                if not msgs:
                    break
                seen += len(msgs)
                pages += 1
                after = msgs[-1]["id"]
            all_s = time.perf_counter() - t1
            print(f"queue list: first page (100) {first_s * 1000:.0f} ms; a page at 90% "
                  f"{deep_s * 1000:.0f} ms; all {seen} messages in {pages} pages of "
                  f"{args.limit}: {all_s:.1f} s ({all_s / max(pages, 1) * 1000:.0f} ms/page)")
            mem = status(mta.proc.pid)
            print(f"RSS after paging: {mem['VmRSS']} MiB (peak {mem['VmHWM']} MiB)")
        finally:
            mta.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
