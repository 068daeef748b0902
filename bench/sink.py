"""A fast sink SMTP server for benchmarks: accepts (and forgets) everything, pipelined.

    python bench/sink.py --listen 127.0.0.2:2526 [--listen ...] [--tempfail 0.1]
                         [--json stats.json] [--stall]

One asyncio.Protocol, no per-line awaits: every command in a received chunk is answered in
one write (RFC 2920), and DATA is found with one byte search for the end marker. A share of
RCPTs (`--tempfail`) gets "451 4.7.1" so the sender's retry path is exercised too. Prints
counts every `--report` seconds and on SIGINT/SIGTERM. For bench/run.py: `--json` writes the
counts, recipients accepted per 0.25 s of wall time, and end-to-end delays (read from an
`X-Bench-T: <unix time>` header that bench/ingest.py --stamp adds) at exit; `--stall`
accepts connections and never greets, so a sender's deliveries hang (ingest-only runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import sys
import time

EHLO = (b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n")


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.messages = 0
        self.recipients = 0
        self.tempfails = 0
        self.bytes = 0
        self.stored = 0  # recipients of messages whose DATA got 250 (what "holds" means)
        # For --json: recipients per wall-clock bin, end-to-end delays (a bounded sample).
        self.bins: dict[int, int] = {}
        self.delays: list[float] = []
        self.first_time = 0.0
        self.last_time = 0.0

    def delivered(self, rcpts: int, block: bytes) -> None:
        now = time.time()
        if not self.first_time:
            self.first_time = now
        self.last_time = now
        b = int(now * BINS_PER_SECOND)
        self.bins[b] = self.bins.get(b, 0) + rcpts
        # The stamp is in the header, near the start: bound the search.
        i = block.find(b"X-Bench-T: ", 0, 4096)
        if i >= 0 and len(self.delays) < MAX_DELAYS:
            j = block.find(b"\r\n", i)
            try:
                self.delays.extend([now - float(block[i + 11:j])] * rcpts)
            except ValueError:
                pass

    def as_json(self) -> dict[str, object]:
        return {"connections": self.connections, "messages": self.messages,
                "recipients": self.recipients, "stored": self.stored, "tempfails": self.tempfails,
                "bytes": self.bytes, "first_time": self.first_time,
                "last_time": self.last_time, "bin_seconds": 1 / BINS_PER_SECOND,
                "bins": sorted(self.bins.items()), "delays": self.delays}


BINS_PER_SECOND = 4
MAX_DELAYS = 1_000_000  # 8 MB of floats at most


class SinkProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, tempfail: float, rng: random.Random) -> None:
        self.stats, self.tempfail, self.rng = stats, tempfail, rng
        self.buf = b""
        self.in_data = False
        self.rcpts = 0
        self.transport: asyncio.Transport | None = None
        self.track = False  # record bins and delays (--json)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1
        self.transport.write(b"220 sink.test ESMTP sink\r\n")

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        pos = 0
        while pos < len(buf):
            if self.in_data:
                if buf.startswith(b".\r\n", pos):
                    end = pos  # empty body
                else:
                    end = buf.find(b"\r\n.\r\n", pos)
                    if end < 0:
                        break
                    end += 2
                self.stats.bytes += end - pos
                if self.track:
                    self.stats.delivered(self.rcpts, buf[pos:end])
                pos = end + 3
                self.in_data = False
                self.stats.messages += 1
                self.stats.stored += self.rcpts
                out.append(b"250 2.0.0 Ok: queued\r\n")
                continue
            eol = buf.find(b"\n", pos)
            if eol < 0:
                break
            line = buf[pos:eol]
            pos = eol + 1
            out.append(self._command(line[:4].upper()))
            if out[-1] is _CLOSE:
                out[-1] = b"221 2.0.0 Bye\r\n"
                self._flush(out)
                if self.transport is not None:
                    self.transport.close()
                return
        self.buf = buf[pos:]
        self._flush(out)

    def _command(self, verb: bytes) -> bytes:
        if verb == b"RCPT":
            if self.tempfail and self.rng.random() < self.tempfail:
                self.stats.tempfails += 1
                return b"451 4.7.1 Try again later\r\n"
            self.rcpts += 1
            self.stats.recipients += 1
            return b"250 2.1.5 Ok\r\n"
        if verb == b"MAIL":
            self.rcpts = 0
            return b"250 2.1.0 Ok\r\n"
        if verb == b"DATA":
            if not self.rcpts:
                return b"554 5.5.1 No valid recipients\r\n"
            self.in_data = True
            return b"354 End data with <CR><LF>.<CR><LF>\r\n"
        if verb == b"RSET" or verb == b"NOOP":
            self.rcpts = 0
            return b"250 2.0.0 Ok\r\n"
        if verb in (b"EHLO", b"HELO"):
            return EHLO
        if verb == b"QUIT":
            return _CLOSE
        return b"502 5.5.2 Command not recognized\r\n"

    def _flush(self, out: list[bytes]) -> None:
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


_CLOSE = b"QUIT"


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class StallProtocol(asyncio.Protocol):
    """Accepts the connection and never says a word: the sender waits for a greeting."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


def _factory(stats: Stats, tempfail: float, rng: random.Random, track: bool,
             stall: bool):  # type: ignore[no-untyped-def]
    def make() -> asyncio.Protocol:
        if stall:
            stats.connections += 1
            return StallProtocol()
        p = SinkProtocol(stats, tempfail, rng)
        p.track = track
        return p
    return make


async def serve(listen: list[tuple[str, int]], tempfail: float, report: float,
                seed: int, json_path: str | None = None, stall: bool = False) -> Stats:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(seed)
    make = _factory(stats, tempfail, rng, json_path is not None, stall)
    servers = [await loop.create_server(make, h, p, reuse_address=True) for h, p in listen]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"sink listening on {', '.join(f'{h}:{p}' for h, p in listen)}", flush=True)
    t0, last = time.monotonic(), 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=report)
        except TimeoutError:
            rate = (stats.messages - last) / report
            last = stats.messages
            print(f"{time.monotonic() - t0:8.1f}s messages={stats.messages} "
                  f"rate={rate:.0f}/s tempfails={stats.tempfails} "
                  f"recipients={stats.recipients} stored={stats.stored}", flush=True)
    for s in servers:
        s.close()
    print(f"total connections={stats.connections} messages={stats.messages} "
          f"recipients={stats.recipients} tempfails={stats.tempfails} bytes={stats.bytes}",
          flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", action="append", type=_hostport, required=True,
                    help="host:port, repeatable")
    ap.add_argument("--tempfail", type=float, default=0.0,
                    help="share of RCPTs answered 451 (0..1)")
    ap.add_argument("--report", type=float, default=5.0, help="seconds between reports")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", help="write counts, per-0.25s bins and delays here at exit")
    ap.add_argument("--stall", action="store_true",
                    help="accept connections but never answer (deliveries hang)")
    args = ap.parse_args(argv)
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # the sink works without it, just slower
        runner = asyncio.run
    stats = runner(serve(args.listen, args.tempfail, args.report, args.seed, args.json,
                         args.stall))
    if args.json:  # after the loop: the file write must not block it
        with open(args.json, "w") as f:
            json.dump(stats.as_json(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
