"""A bare mta SMTP ingress server for bench/ingest.py: the real SmtpServer on uvloop with
a handler that accepts everything in memory (no spool), so the numbers are ingress alone.

    .venv/bin/python bench/ingest_server.py --port 2526 [--profile out.prof]

Prints "READY pid=N port=P" once listening; stops (drains) on SIGTERM / SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import itertools
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mta.config import Config, ServerConfig, SmtpConfig
from mta.queue.envelope import Envelope
from mta.rfc5321.reply import Reply
from mta.smtp.handler import SessionInfo
from mta.smtp.server import SmtpServer


class CountingHandler:
    """Accepts everything; keeps a count and the bytes seen, not the messages."""

    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self._ids = itertools.count(1)

    async def check_mail(self, session: SessionInfo, address: str,
                         params: dict[str, str]) -> Reply | None:
        return None

    async def check_rcpt(self, session: SessionInfo, address: str,
                         params: dict[str, str]) -> Reply | None:
        return None

    async def accept_message(self, session: SessionInfo, envelope: Envelope,
                             data: bytes) -> Reply:
        self.count += 1
        self.bytes += len(data)
        return Reply(250, "2.0.0", f"Ok: queued as {next(self._ids):08X}")


async def serve(host: str, port: int) -> None:
    config = Config(server=ServerConfig(hostname="bench.test"),
                    smtp=SmtpConfig(listen=[(host, port)], max_connections=10_000,
                                    max_connections_per_ip=10_000))
    handler = CountingHandler()
    server = SmtpServer(config, handler)
    await server.start()
    print(f"READY pid={__import__('os').getpid()} port={server.addresses[0][1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(timeout=5)
    print(f"accepted {handler.count} messages, {handler.bytes} bytes", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    ap.add_argument("--profile", metavar="FILE", help="write a cProfile dump on exit")
    args = ap.parse_args()
    if args.no_uvloop:
        runner = asyncio.run
    else:
        import uvloop
        runner = uvloop.run
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        try:
            runner(serve(args.host, args.port))
        finally:
            prof.disable()
            prof.dump_stats(args.profile)
    else:
        runner(serve(args.host, args.port))


if __name__ == "__main__":
    main()
