"""A fast sink SMTP server for benchmarks: accepts (and forgets) everything, pipelined.

    python bench/sink.py --listen 127.0.0.2:2526 [--listen ...] [--tempfail 0.1]
                         [--json stats.json] [--stall] [--chunking]

One asyncio.Protocol, no per-line awaits: every command in a received chunk is answered in
one write (RFC 2920), and DATA is found with one byte search for the end marker. A share of
RCPTs (`--tempfail`) gets "451 4.7.1" so the sender's retry path is exercised too. Prints
counts every `--report` seconds when they changed, and on SIGINT/SIGTERM. For
bench/run.py: `--json` writes the counts, recipients accepted per 0.25 s of wall time,
and end-to-end delays (read from an `X-Bench-T: <unix time>` header that bench/ingest.py
--stamp adds) at exit; `--stall` accepts connections and never greets, so a sender's
deliveries hang (ingest-only runs). `--chunking` offers RFC 3030 CHUNKING and takes BDAT
(as the large mailbox providers do), so a sender that pipelines BDAT with its envelope
delivers in one round trip.

Smart mode, to look like the receivers of production (issue 19):

    --mix "421:0.01,451:0.03,slow:0.02,550:0.02"
        421   a share of connections greeted "421 4.7.0 Try again later" and closed
        451   a share of RCPTs answered "451 4.7.1 Try again later"
        slow  a share of RCPTs answered "451 4.7.28 ... rate limited, slow down" (what
              adaptive shaping reads as a throttle signal)
        550   a share of recipient addresses refused "550 5.1.1 no such user", always the
              same addresses (by hash), so a recipient's fate is final and counted once
    --latency "d1*.bench.test=80,*=5"
        milliseconds before RCPT replies for recipients of matching domains (first match;
        fnmatch globs): the slow receivers among the fast

`final` in the report lines = stored + refused: every recipient has its fate.
"""

from __future__ import annotations

import argparse
import asyncio
import fnmatch
import json
import random
import signal
import sys
import time
import zlib

EHLO = (b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SIZE 0\r\n"
        b"250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n")
EHLO_CHUNKING = EHLO.replace(b"250 SMTPUTF8", b"250-SMTPUTF8\r\n250 CHUNKING")


class Stats:
    def __init__(self) -> None:
        self.connections = 0
        self.messages = 0
        self.recipients = 0
        self.tempfails = 0
        self.bytes = 0
        self.stored = 0  # recipients of messages whose DATA got 250 (what "holds" means)
        self.refused = 0  # 550: final refusals (smart mode)
        self.slowdowns = 0
        self.greet_refused = 0
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
                "refused": self.refused, "slowdowns": self.slowdowns,
                "greet_refused": self.greet_refused,
                "bytes": self.bytes, "first_time": self.first_time,
                "last_time": self.last_time, "bin_seconds": 1 / BINS_PER_SECOND,
                "bins": sorted(self.bins.items()), "delays": self.delays}


BINS_PER_SECOND = 4
MAX_DELAYS = 1_000_000  # 8 MB of floats at most


class Mix:
    """The smart mode's answers (see the module docstring)."""

    def __init__(self, spec: str = "", latency: str = "") -> None:
        self.greet421 = self.t451 = self.slow = self.p550 = 0.0
        for part in filter(None, (p.strip() for p in spec.split(","))):
            kind, _, share = part.partition(":")
            attr = {"421": "greet421", "451": "t451", "slow": "slow", "550": "p550"}[kind]
            setattr(self, attr, float(share))
        self.latency: list[tuple[str, float]] = []
        for part in filter(None, (p.strip() for p in latency.split(","))):
            glob, _, ms = part.rpartition("=")
            self.latency.append((glob.lower(), float(ms) / 1000))

    def delay(self, domain: str) -> float:
        for glob, seconds in self.latency:
            if fnmatch.fnmatchcase(domain, glob):
                return seconds
        return 0.0

    def gone(self, address: bytes) -> bool:
        return bool(self.p550) and zlib.crc32(address.lower()) / 2 ** 32 < self.p550


NO_MIX = Mix()


class SinkProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, tempfail: float, rng: random.Random,
                 mix: Mix = NO_MIX, chunking: bool = False) -> None:
        self.stats, self.tempfail, self.rng, self.mix = stats, tempfail, rng, mix
        self.chunking = chunking
        self.bdat_left = 0  # octets of the BDAT chunk still to come
        self.bdat_last = False
        self.bdat_size = 0
        self.bdat_head = b""  # the message's first bytes (the X-Bench-T stamp)
        self._wait = 0.0  # this chunk's reply delay (slowest recipient domain)
        self._due = 0.0  # when the last delayed write goes out: replies stay in order
        self.buf = b""
        self.in_data = False
        self.rcpts = 0
        self.transport: asyncio.Transport | None = None
        self.track = False  # record bins and delays (--json)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.stats.connections += 1
        if self.mix.greet421 and self.rng.random() < self.mix.greet421:
            self.stats.greet_refused += 1
            self.transport.write(b"421 4.7.0 Try again later\r\n")
            self.transport.close()
            return
        self.transport.write(b"220 sink.test ESMTP sink\r\n")

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        pos = 0
        while pos < len(buf):
            if self.bdat_left:
                take = min(self.bdat_left, len(buf) - pos)
                if len(self.bdat_head) < 4096:
                    self.bdat_head += buf[pos:pos + min(take, 4096)]
                pos += take
                self.bdat_left -= take
                if self.bdat_left:
                    break
                out.append(self._chunk_done())
                continue
            if self.in_data:
                if buf.startswith(b".\r\n", pos):
                    end = pos  # empty body
                else:
                    end = buf.find(b"\r\n.\r\n", pos)
                    if end < 0:
                        break
                    end += 2
                out.append(self._stored(end - pos, buf[pos:end]))
                pos = end + 3
                self.in_data = False
                continue
            eol = buf.find(b"\n", pos)
            if eol < 0:
                break
            line = buf[pos:eol]
            pos = eol + 1
            verb = line[:4].upper()
            if verb == b"BDAT" and self.chunking:
                words = line.split()
                if len(words) not in (2, 3) or not words[1].isdigit() or (
                        len(words) == 3 and words[2].upper() != b"LAST"):
                    out.append(b"501 5.5.4 Syntax: BDAT size [LAST]\r\n")
                    continue
                self.bdat_left, self.bdat_last = int(words[1]), len(words) == 3
                self.bdat_size += self.bdat_left
                if not self.bdat_left:
                    out.append(self._chunk_done())
                continue
            out.append(self._command(verb, line))
            if out[-1] is _CLOSE:
                out[-1] = b"221 2.0.0 Bye\r\n"
                self._flush(out)
                if self.transport is not None:
                    self.transport.close()
                return
        self.buf = buf[pos:]
        self._flush(out)

    def _chunk_done(self) -> bytes:
        """The reply to a BDAT whose chunk has all arrived; at LAST, the message's."""
        if not self.bdat_last:
            return b"250 2.0.0 chunk received\r\n"
        size, head = self.bdat_size, self.bdat_head
        self.bdat_size, self.bdat_head = 0, b""
        if not self.rcpts:
            return b"554 5.5.1 No valid recipients\r\n"
        return self._stored(size, head)

    def _stored(self, size: int, block: bytes) -> bytes:
        """A message of `size` bytes whose content (or its start) is `block` is held."""
        self.stats.bytes += size
        if self.track:
            self.stats.delivered(self.rcpts, block)
        self.stats.messages += 1
        self.stats.stored += self.rcpts
        return b"250 2.0.0 Ok: queued\r\n"

    def _command(self, verb: bytes, line: bytes = b"") -> bytes:
        if verb == b"RCPT":
            if self.tempfail and self.rng.random() < self.tempfail:
                self.stats.tempfails += 1
                return b"451 4.7.1 Try again later\r\n"
            if self.mix is not NO_MIX:
                reply = self._smart_rcpt(line)
                if reply:
                    return reply
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
            return EHLO_CHUNKING if self.chunking else EHLO
        if verb == b"QUIT":
            return _CLOSE
        return b"502 5.5.2 Command not recognized\r\n"

    def _smart_rcpt(self, line: bytes) -> bytes:
        start, end = line.find(b"<"), line.find(b">")
        address = line[start + 1:end] if 0 <= start < end else b""
        domain = address.rpartition(b"@")[2].decode("ascii", "replace").lower()
        self._wait = max(self._wait, self.mix.delay(domain))
        if self.mix.gone(address):
            self.stats.refused += 1
            return b"550 5.1.1 <" + address + b">: no such user\r\n"
        r = self.rng.random()
        if r < self.mix.t451:
            self.stats.tempfails += 1
            return b"451 4.7.1 Try again later\r\n"
        if r < self.mix.t451 + self.mix.slow:
            self.stats.slowdowns += 1
            return (b"451 4.7.28 Our system has detected an unusual rate of mail from your "
                    b"IP address: rate limited, slow down\r\n")
        return b""

    def _flush(self, out: list[bytes]) -> None:
        if not out or self.transport is None:
            return
        data = b"".join(out)
        wait, self._wait = self._wait, 0.0
        loop = asyncio.get_running_loop()
        now = loop.time()
        if wait <= 0 and self._due <= now:
            self.transport.write(data)
            return
        # A slow domain's replies (and every reply after them) go out later, in order.
        self._due = max(now + wait, self._due)
        transport = self.transport
        loop.call_at(self._due, lambda: transport.is_closing() or transport.write(data))


_CLOSE = b"QUIT"


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


class StallProtocol(asyncio.Protocol):
    """Accepts the connection and never says a word: the sender waits for a greeting."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


def _factory(stats: Stats, tempfail: float, rng: random.Random, track: bool,
             stall: bool, mix: Mix = NO_MIX,
             chunking: bool = False):  # type: ignore[no-untyped-def]
    def make() -> asyncio.Protocol:
        if stall:
            stats.connections += 1
            return StallProtocol()
        p = SinkProtocol(stats, tempfail, rng, mix, chunking)
        p.track = track
        return p
    return make


async def serve(listen: list[tuple[str, int]], tempfail: float, report: float,
                seed: int, json_path: str | None = None, stall: bool = False,
                mix: Mix = NO_MIX, chunking: bool = False) -> Stats:
    loop = asyncio.get_running_loop()
    stats = Stats()
    rng = random.Random(seed)
    make = _factory(stats, tempfail, rng, json_path is not None, stall, mix, chunking)
    servers = [await loop.create_server(make, h, p, reuse_address=True) for h, p in listen]
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"sink listening on {', '.join(f'{h}:{p}' for h, p in listen)}", flush=True)
    t0, last, last_final = time.monotonic(), 0, 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=report)
        except TimeoutError:
            final = stats.stored + stats.refused
            if stats.messages == last and final == last_final:
                continue  # nothing new: a short --report costs an idle sink nothing
            rate = (stats.messages - last) / report
            last, last_final = stats.messages, final
            print(f"{time.monotonic() - t0:8.1f}s messages={stats.messages} "
                  f"rate={rate:.0f}/s tempfails={stats.tempfails} "
                  f"recipients={stats.recipients} stored={stats.stored} "
                  f"refused={stats.refused} slowdowns={stats.slowdowns} "
                  f"final={stats.stored + stats.refused}", flush=True)
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
    ap.add_argument("--mix", default="",
                    help='smart mode answers, e.g. "421:0.01,451:0.03,slow:0.02,550:0.02"')
    ap.add_argument("--latency", default="",
                    help='per-domain RCPT delay in ms, e.g. "d1*.bench.test=80,*=5"')
    ap.add_argument("--chunking", action="store_true",
                    help="offer RFC 3030 CHUNKING and take BDAT")
    args = ap.parse_args(argv)
    mix = Mix(args.mix, args.latency) if args.mix or args.latency else NO_MIX
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:  # the sink works without it, just slower
        runner = asyncio.run
    stats = runner(serve(args.listen, args.tempfail, args.report, args.seed, args.json,
                         args.stall, mix, args.chunking))
    if args.json:  # after the loop: the file write must not block it
        with open(args.json, "w") as f:
            json.dump(stats.as_json(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
