"""CPU per message of the outbound client (mta.delivery.client) over reused connections.

    python bench/client_cpu.py [--messages 20000] [--connections 4] [--rcpts 1]
                               [--body 2048] [--aiosmtplib]

Starts bench/sink.py in a child process on 127.0.0.2 (so its CPU is not counted), opens
`--connections` sessions, sends the messages over them concurrently, and reports this
process's CPU time (user+sys, time.process_time) per message, set-up excluded. With
`--aiosmtplib` the same load goes through aiosmtplib for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mta.delivery.client import ClientSettings, SmtpClient
from mta.queue.envelope import Recipient

HOST = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


async def wait_listening(port: int, deadline: float) -> None:
    while True:
        try:
            _, w = await asyncio.open_connection(HOST, port)
            w.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def run_mta(port: int, n: int, conns: int, rcpts: int, body: bytes) -> tuple[float, float]:
    settings = ClientSettings(ehlo_name="bench.test", tls="disabled", command_timeout=10,
                              data_timeout=10, connect_timeout=5, greeting_timeout=5)
    clients = [await SmtpClient.connect(HOST, port, settings) for _ in range(conns)]
    recipients = [Recipient(f"r{i}@sink.test") for i in range(rcpts)]
    per = n // conns

    async def worker(c: SmtpClient) -> None:
        for _ in range(per):
            res = await c.send("bench@mta.test", recipients, body)
            if res.per_recipient[0].code >= 500:
                raise RuntimeError(str(res.per_recipient[0]))

    return await measure(clients, worker, per * conns)


async def measure(clients: list, worker, n: int) -> tuple[float, float]:
    t0, wall0 = os.times(), time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    t1, wall = os.times(), time.perf_counter() - wall0
    user, system = (t1.user - t0.user) / n, (t1.system - t0.system) / n
    print(f"  user {user * 1e6:.1f} us + system {system * 1e6:.1f} us per message")
    for c in clients:
        await c.quit()
    return user + system, n / wall


async def run_aiosmtplib(port: int, n: int, conns: int, rcpts: int,
                         body: bytes) -> tuple[float, float]:
    import aiosmtplib
    clients = []
    for _ in range(conns):
        c = aiosmtplib.SMTP(hostname=HOST, port=port, start_tls=False, use_tls=False)
        await c.connect()
        clients.append(c)
    recipients = [f"r{i}@sink.test" for i in range(rcpts)]
    per = n // conns

    async def worker(c: aiosmtplib.SMTP) -> None:
        for _ in range(per):
            await c.sendmail("bench@mta.test", recipients, body)

    return await measure(clients, worker, per * conns)


async def main_async(args: argparse.Namespace, port: int) -> None:
    await wait_listening(port, time.monotonic() + 10)
    body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * max(1, args.body // 78)
    run = run_aiosmtplib if args.aiosmtplib else run_mta
    cpu, rate = await run(port, args.messages, args.connections, args.rcpts, body)
    name = "aiosmtplib" if args.aiosmtplib else "mta.delivery.client"
    print(f"{name}: {cpu * 1e6:.1f} us CPU/message, {rate:.0f} messages/s wall "
          f"({args.messages} messages, {args.connections} connections, "
          f"{args.rcpts} rcpt, {len(body)} byte body, pid {os.getpid()})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rcpts", type=int, default=1)
    ap.add_argument("--body", type=int, default=2048)
    ap.add_argument("--aiosmtplib", action="store_true")
    args = ap.parse_args()
    import uvloop
    port = free_port()
    sink = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("sink.py")), "--listen",
         f"{HOST}:{port}", "--report", "3600"], stdout=subprocess.DEVNULL)
    try:
        uvloop.run(main_async(args, port))
    finally:
        sink.terminate()
        sink.wait(timeout=10)


if __name__ == "__main__":
    main()
