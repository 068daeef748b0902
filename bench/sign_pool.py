"""The [signing] workers' cost: RSA-2048 signatures through mta.dkim.pool, as the daemon
asks for them (`sign_async` from concurrent tasks on a uvloop loop), per message.

    .venv/bin/python bench/sign_pool.py [-n 3000] [-c 20] [--workers 2] [--size 1024]

Prints signatures per second, the loop thread's CPU per message, the whole process's
(the loop plus any helper thread) and the workers' (from their rusage once they have
exited, so their start-up is included). --workers 0 signs in the loop's thread pool.
Works against older trees too (run it with PYTHONPATH=that tree).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
from pathlib import Path

import uvloop

from mta.config import DkimDomainConfig
from mta.dkim import DkimSigner, sign_async
from mta.dkim.keys import RSA, generate_key
from mta.dkim.pool import attach_pool

NOW = 1.7e9
# bench/dkim_sign.py's message (not imported: it puts this tree first on sys.path).
HEAD = (b"From: Shop <news@example.com>\r\nTo: someone@example.org\r\n"
        b"Subject: Your weekly offers\r\nDate: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
        b"Message-ID: <bench.1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n")
LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"


def message(size: int) -> bytes:
    return HEAD + LINE * max(1, -(-(size - len(HEAD)) // len(LINE)))


async def run(args: argparse.Namespace, cfg: dict[str, DkimDomainConfig], msg: bytes) -> None:
    s = DkimSigner.from_config(cfg)
    attach_pool(s, cfg, hostname="", file="bench", workers=args.workers)
    for _ in range(50):  # workers up, keys loaded, caches warm
        await sign_async(s, msg, NOW)
    await asyncio.sleep(0.5)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    loop0, proc0, wall0 = time.thread_time(), time.process_time(), time.perf_counter()
    left = args.messages

    async def session() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await sign_async(s, msg, NOW)

    await asyncio.gather(*(session() for _ in range(args.concurrency)))
    wall = time.perf_counter() - wall0
    loop_s, proc_s = time.thread_time() - loop0, time.process_time() - proc0
    if s.pool is not None:
        if hasattr(s.pool, "aclose"):
            await s.pool.aclose()
        else:  # the ProcessPoolExecutor pool (before issue 19's pipe workers)
            s.pool._executor.shutdown(wait=True)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    kids = (kids1.ru_utime + kids1.ru_stime) - (kids0.ru_utime + kids0.ru_stime)
    n = args.messages
    print(f"workers={args.workers} sessions={args.concurrency} {args.size} B: "
          f"{n / wall:,.0f} signatures/s; CPU per message: loop thread {loop_s / n * 1e6:.0f} "
          f"us, process {proc_s / n * 1e6:.0f} us, workers (with start-up) "
          f"{kids / n * 1e6:.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=3000)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    args = ap.parse_args()
    _, pem = generate_key(RSA)
    key = Path(tempfile.mkdtemp()) / "k.key"
    key.write_bytes(pem)
    cfg = {"example.com": DkimDomainConfig(selector="s1", key=key)}
    uvloop.run(run(args, cfg, message(args.size)))


if __name__ == "__main__":  # the old pool's spawned workers import this file too
    main()
