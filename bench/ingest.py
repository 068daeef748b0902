"""Ingest load generator: N messages of S bytes over C concurrent SMTP sessions.

Drives any SMTP server at --host/--port: EHLO, then MAIL/RCPT/DATA pipelined (when the
server offers PIPELINING), the message, and the 250. A new connection per message by
default, or --reuse to send every message of a session over one connection. Reports
accepted msg/s, p50/p99 latency from the end of DATA (the final ".") to its reply, and, with
--pid, the server's CPU seconds per 1,000 messages (/proc/PID/stat) and peak RSS
(/proc/PID/status VmHWM).

    .venv/bin/python bench/ingest_server.py --port 2526 &        # prints READY pid=... port=...
    .venv/bin/python bench/ingest.py --port 2526 -n 20000 -c 20 -s 1024 --pid $SERVER_PID
    .venv/bin/python bench/ingest.py --port 2526 -n 20000 -c 20 -s 1024 --reuse --pid ...

For bench/run.py: `--rcpts N` recipients per message, `--domain-count D` spreads them over
d0..d{D-1}.<--domain>, `--stamp` adds an `X-Bench-T: <unix time>` header (bench/sink.py
turns it into end-to-end delay), `--json FILE` writes counts, latencies and accepted
messages per 0.25 s of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field

TIMEOUT = 30.0


def make_message(size: int, index: int, stamp: bool = False) -> bytes:
    """A message of about `size` bytes with CRLF lines, already dot-safe."""
    head = (f"From: bench@load.test\r\nTo: sink@dest.test\r\nSubject: bench {index}\r\n"
            f"Message-ID: <{index}.{os.getpid()}@load.test>\r\n").encode()
    if stamp:
        head += f"X-Bench-T: {time.time():.6f}\r\n".encode()
    head += b"\r\n"
    line = b"x" * 76 + b"\r\n"
    body_len = max(size - len(head), 0)
    body = line * (body_len // len(line))
    rest = body_len - len(body)
    if rest >= 2:
        body += b"y" * (rest - 2) + b"\r\n"
    return head + body


@dataclass
class Stats:
    accepted: int = 0
    rejected: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    last_error: str = ""
    first_time: float = 0.0  # wall clock of the first MAIL sent
    bins: dict[int, int] = field(default_factory=dict)  # accepted per 0.25 s of wall time

    def accept(self) -> None:
        self.accepted += 1
        b = int(time.time() * BINS_PER_SECOND)
        self.bins[b] = self.bins.get(b, 0) + 1


BINS_PER_SECOND = 4


def recipients(args: argparse.Namespace, index: int) -> list[bytes]:
    """RCPT TO lines of message `index`: --rcpts of them, over --domain-count domains."""
    n = getattr(args, "rcpts", 1)
    count = getattr(args, "domain_count", 0)
    domain = getattr(args, "domain", "dest.test")
    out = []
    for k in range(n):
        d = f"d{(index * n + k) % count}.{domain}" if count else domain
        local = "sink" if n == 1 else f"sink{k}"
        out.append(f"RCPT TO:<{local}@{d}>\r\n".encode())
    return out


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int) -> Client:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        return cls(r, w)

    async def reply(self) -> tuple[int, str]:
        """Read one reply (all its lines); return (code, last line)."""
        while True:
            line = await asyncio.wait_for(self.reader.readuntil(b"\n"), TIMEOUT)
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), line.decode("utf-8", "replace").rstrip()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 5)
        except (OSError, TimeoutError):
            pass


async def open_session(host: str, port: int) -> tuple[Client, bool]:
    c = await Client.connect(host, port)
    code, text = await c.reply()
    if code != 220:
        raise ConnectionError(f"greeting: {text}")
    c.writer.write(b"EHLO load.test\r\n")
    pipelining = False
    while True:
        line = await asyncio.wait_for(c.reader.readuntil(b"\n"), TIMEOUT)
        if line[4:].strip().upper() == b"PIPELINING":
            pipelining = True
        if line[3:4] != b"-":
            if line[:3] != b"250":
                raise ConnectionError(f"EHLO: {line!r}")
            return c, pipelining


async def send_one(c: Client, pipelining: bool, message: bytes, stats: Stats,
                   rcpts: list[bytes] | None = None) -> None:
    if not stats.first_time:
        stats.first_time = time.time()
    cmds = [b"MAIL FROM:<bench@load.test>\r\n", *(rcpts or [b"RCPT TO:<sink@dest.test>\r\n"]),
            b"DATA\r\n"]
    if pipelining:
        c.writer.write(b"".join(cmds))
        replies = [await c.reply() for _ in cmds]
    else:
        replies = []
        for cmd in cmds:
            c.writer.write(cmd)
            replies.append(await c.reply())
            if replies[-1][0] >= 400:
                break
    if replies[-1][0] != 354:
        stats.rejected += 1
        stats.last_error = " | ".join(t for _, t in replies)
        if len(replies) == len(cmds) or not pipelining:
            c.writer.write(b"RSET\r\n")
            await c.reply()
        return
    c.writer.write(message + b".\r\n")
    started = time.perf_counter()
    code, text = await c.reply()
    stats.latencies.append(time.perf_counter() - started)
    if code == 250:
        stats.accept()
    else:
        stats.rejected += 1
        stats.last_error = text


async def worker(args: argparse.Namespace, next_index: list[int], stats: Stats) -> None:
    session: tuple[Client, bool] | None = None
    try:
        while next_index[0] < args.messages:
            i = next_index[0]
            next_index[0] += 1
            message = make_message(args.size, i, getattr(args, "stamp", False))
            try:
                if session is None:
                    session = await open_session(args.host, args.port)
                c, pipelining = session
                await send_one(c, pipelining, message, stats, recipients(args, i))
                if not args.reuse:
                    c.writer.write(b"QUIT\r\n")
                    await c.reply()
                    await c.close()
                    session = None
            except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                    ValueError) as e:
                stats.errors += 1
                stats.last_error = f"{type(e).__name__}: {e}"
                if session is not None:
                    await session[0].close()
                session = None
    finally:
        if session is not None:
            session[0].writer.write(b"QUIT\r\n")
            await session[0].close()


def proc_cpu(pid: int) -> float:
    """utime + stime of `pid` in seconds (/proc/PID/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm(pid: int) -> str:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return line.split(":", 1)[1].strip()
    return "?"


async def progress(args: argparse.Namespace, stats: Stats, started: float) -> None:
    width = 30
    while True:
        done = stats.accepted + stats.rejected + stats.errors
        frac = done / args.messages if args.messages else 1.0
        rate = stats.accepted / max(time.perf_counter() - started, 1e-9)
        bar = "#" * int(frac * width)
        sys.stderr.write(f"\r[{bar:<{width}}] {done}/{args.messages} {rate:8.0f} msg/s"
                         f"  rejected {stats.rejected} errors {stats.errors}")
        sys.stderr.flush()
        await asyncio.sleep(0.25)


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def run_load(args: argparse.Namespace, stats: Stats, show_progress: bool) -> None:
    next_index = [0]
    started = time.perf_counter()
    bar = asyncio.create_task(progress(args, stats, started)) if show_progress else None
    await asyncio.gather(*(worker(args, next_index, stats) for _ in range(args.concurrency)))
    if bar is not None:
        bar.cancel()
        sys.stderr.write("\n")


def _child(args: argparse.Namespace) -> Stats:
    """One client process of --procs: its share of the messages and sessions."""
    stats = Stats()
    _runner()(run_load(args, stats, False))
    return stats


def _runner():  # type: ignore[no-untyped-def]
    try:
        import uvloop
        return uvloop.run
    except ImportError:
        return asyncio.run


def run(args: argparse.Namespace) -> int:
    cpu0 = proc_cpu(args.pid) if args.pid else 0.0
    started = time.perf_counter()
    if args.procs <= 1:
        stats = Stats()
        _runner()(run_load(args, stats, not args.quiet))
    else:
        # The client costs more CPU per message than the server: spread it over processes.
        import concurrent.futures
        import copy
        parts = []
        for i in range(args.procs):
            part = copy.copy(args)
            part.messages = args.messages // args.procs + (i < args.messages % args.procs)
            part.concurrency = max(1, args.concurrency // args.procs
                                   + (i < args.concurrency % args.procs))
            parts.append(part)
        with concurrent.futures.ProcessPoolExecutor(args.procs) as pool:
            results = list(pool.map(_child, parts))
        stats = Stats()
        for r in results:
            stats.accepted += r.accepted
            stats.rejected += r.rejected
            stats.errors += r.errors
            stats.latencies += r.latencies
            stats.first_time = min(t for t in (stats.first_time, r.first_time) if t) \
                if r.first_time else stats.first_time
            for b, n in r.bins.items():
                stats.bins[b] = stats.bins.get(b, 0) + n
            stats.last_error = r.last_error or stats.last_error
    elapsed = time.perf_counter() - started
    lat = sorted(stats.latencies)
    mode = "reused connections" if args.reuse else "new connection per message"
    print(f"{stats.accepted} accepted, {stats.rejected} rejected, {stats.errors} errors "
          f"in {elapsed:.2f}s ({mode}, {args.concurrency} sessions, {args.size} B, "
          f"{args.procs} client process(es))")
    print(f"accepted: {stats.accepted / elapsed:.0f} msg/s")
    print(f"latency end-of-DATA -> reply: p50 {percentile(lat, 50) * 1000:.2f} ms, "
          f"p99 {percentile(lat, 99) * 1000:.2f} ms")
    if args.pid:
        cpu = proc_cpu(args.pid) - cpu0
        per_k = cpu / max(stats.accepted, 1) * 1000
        print(f"server CPU: {cpu:.2f}s total, {per_k:.3f}s per 1,000 messages "
              f"(= {1000 / per_k if per_k else float('inf'):.0f} msg/s per core); "
              f"peak RSS {proc_hwm(args.pid)}")
    if stats.last_error:
        print(f"last error: {stats.last_error}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"accepted": stats.accepted, "rejected": stats.rejected,
                       "errors": stats.errors, "elapsed": elapsed,
                       "first_time": stats.first_time, "last_error": stats.last_error,
                       "bin_seconds": 1 / BINS_PER_SECOND, "bins": sorted(stats.bins.items()),
                       "latencies": stats.latencies}, f)
    return 0 if stats.errors == 0 else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=2525)
    ap.add_argument("-n", "--messages", type=int, default=10_000)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("-s", "--size", type=int, default=1024, help="message size in bytes")
    ap.add_argument("--reuse", action="store_true", help="many messages per connection")
    ap.add_argument("--pid", type=int, help="server pid: report its CPU and peak RSS")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    ap.add_argument("--procs", type=int, default=1,
                    help="client processes (the load is split; no live progress bar)")
    ap.add_argument("--rcpts", type=int, default=1, help="recipients per message")
    ap.add_argument("--domain", default="dest.test", help="recipient domain")
    ap.add_argument("--domain-count", type=int, default=0,
                    help="spread recipients over d0..dN-1.DOMAIN")
    ap.add_argument("--stamp", action="store_true", help="add X-Bench-T: <unix time>")
    ap.add_argument("--json", help="write counts, latencies and per-0.25s bins here")
    args = ap.parse_args()
    sys.exit(run(args))


if __name__ == "__main__":
    main()
