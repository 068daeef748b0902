"""Where the daemon's CPU goes per relayed message, by stage (issue 19: "report per-stage
µs per message").

    .venv/bin/pip install py-spy        # the sampler (not a dependency of mta)
    .venv/bin/python bench/profile.py [--messages 6000] [--rate 250] [--top 15]

Starts the world of bench/run.py (Unbound with its zones, bench/sink.py on 127.0.0.2-11)
and one mta relaying to it, warms it up, then relays --messages 1 KB messages from
bench/ingest.py's load generator while py-spy samples every thread of the daemon (the
event loop, the spool's and policy's database threads) --rate times a second. Each sample
goes to the stage of the innermost frame in mta's own code (so the stdlib and C work a
stage calls is that stage's), or "event loop and libraries" when no mta frame is on the
stack (uvloop's I/O, asyncio's scheduling). py-spy runs with --native, so a thread
waiting (on a lock, a queue, epoll) shows as such and is left out. A stage's share of the
samples times the daemon's CPU per message (from /proc, the same run) is its µs per
message. Sampling with --native stops the process for each sample: the run is slower than
an unprofiled one, the shares are what count. py-spy counts a thread inside a system call
(fdatasync, a socket write) as working; `--gil` instead samples only the thread holding
the GIL (no native frames), which is closer to the CPU the Python code itself costs.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import ingest  # noqa: E402  (bench/ingest.py: the load generator)
import run as world  # noqa: E402  (bench/run.py: DNS zones and sinks)

from tests.support.daemon import MtaProcess  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402

# mta's rooms, as the stages of a message's path.
STAGES = [
    ("smtp", "SMTP server (session, parsing, replies)"),
    ("rfc5321", "SMTP server (session, parsing, replies)"),
    ("ingress", "ingest (envelope, headers, DSN sink)"),
    ("queue", "spool (group commit, SQLite)"),
    ("policy", "policy (plans, SQLite journal)"),
    ("suppress", "suppression check"),
    ("delivery", "delivery (dispatcher, SMTP client)"),
    ("shaping", "shaping (gate, leases, throttles)"),
    ("dns", "DNS (resolver, cache)"),
    ("dkim", "DKIM"),
    ("observe", "events log and metrics"),
    ("bounce", "bounce classification"),
    ("reputation", "reputation guard"),
    ("webhooks", "webhooks"),
    ("content", "content rules"),
    ("http", "HTTP API"),
]
_FRAME = re.compile(r"\((?:[^()]*/)?mta/([a-z0-9_]+)(?:/|\.py)")


# A thread waiting, not working: its innermost native frames are one of these.
_IDLE = ("PyThread_acquire_lock_timed", "pthread_cond_timedwait", "pthread_cond_wait",
         "epoll_pwait", "epoll_wait", "sem_timedwait", "sem_wait", "__select", "poll (libc")
# Frames that hold the whole daemon up (serve -> uvloop.run): not a stage of their own.
_OUTER = ("cli", "daemon", "supervisor")


def idle(stack: str) -> bool:
    return any(k in f for f in stack.split(";")[-3:] for k in _IDLE)


def stage_of(stack: str) -> str:
    """The stage of one collapsed stack ("a (file:line);b (file:line)", outermost first)."""
    for frame in reversed(stack.split(";")):
        m = _FRAME.search(frame)
        if m and m.group(1) not in _OUTER:
            room = m.group(1)
            for name, label in STAGES:
                if room == name:
                    return label
            return f"other mta ({room})"
    if "aiosqlite/" in stack:
        return "SQLite (the spool's and policy's database threads)"
    if "concurrent/futures/thread.py" in stack:
        return "executor threads"
    return "event loop and libraries (uvloop I/O, asyncio)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=6000)
    ap.add_argument("-c", "--concurrency", type=int, default=20)
    ap.add_argument("--rate", type=int, default=250, help="samples per second")
    ap.add_argument("--top", type=int, default=12, help="hottest functions to list")
    ap.add_argument("--stacks", help="keep py-spy's collapsed stacks in this file")
    ap.add_argument("--gil", action="store_true",
                    help="sample only the thread holding the GIL, without native frames: "
                         "what the Python code costs (a thread in fsync or waiting for the "
                         "GIL is not counted), with each socket write or thread wake-up "
                         "charged to the line that makes it")
    args = ap.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy is not installed: .venv/bin/pip install py-spy", file=sys.stderr)
        return 69
    with tempfile.TemporaryDirectory(prefix="mta-bench-profile-") as tmp:
        work = Path(tmp)
        dns = DnsServer(world.zones(), work / "dns")
        dns.start()
        port = world.common_port()
        sink = world.Sink(work, port)
        mta = MtaProcess(work, "", dns=dns.nameserver, delivery_port=port,
                         delivery_extra='retry = ["1h"]\nconnection_limit = 20\n')
        try:
            mta.start(timeout=60)
            assert mta.proc is not None
            pid = mta.proc.pid
            la = argparse.Namespace(host="127.0.0.1", port=mta.smtp_port, messages=0,
                                    concurrency=args.concurrency, size=1024, reuse=True,
                                    rcpts=1, domain=world.MANY_DOMAIN, domain_count=1000,
                                    stamp=False)
            la.messages = max(args.messages // 5, 200)
            ingest._runner()(ingest.run_load(la, ingest.Stats(), False))  # warm-up
            sink.wait_stored(la.messages, 120)
            # CPU per message unprofiled (py-spy --native stops the process per sample).
            stored0, cpu0 = sink.stored, ingest.proc_cpu(pid)
            la.messages = args.messages
            plain = ingest.Stats()
            ingest._runner()(ingest.run_load(la, plain, False))
            sink.wait_stored(stored0 + plain.accepted, 300)
            cpu_plain = ingest.proc_cpu(pid) - cpu0
            out = work / "stacks.txt"
            rec = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(args.rate),
                                    "--format", "raw", "--output", str(out),
                                    "--gil" if args.gil else "--native"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(1.0)  # attached
            stored0, cpu0 = sink.stored, ingest.proc_cpu(pid)
            la.messages = args.messages
            t0 = time.perf_counter()
            stats = ingest.Stats()
            ingest._runner()(ingest.run_load(la, stats, False))
            sink.wait_stored(stored0 + stats.accepted, 300)
            elapsed = time.perf_counter() - t0
            cpu = ingest.proc_cpu(pid) - cpu0
            rec.send_signal(2)  # SIGINT: py-spy writes what it has
            rec.wait(60)
        finally:
            mta.kill()
            sink.stop()
            dns.stop()
        if args.stacks:
            shutil.copyfile(out, args.stacks)
        samples: collections.Counter[str] = collections.Counter()
        functions: collections.Counter[str] = collections.Counter()
        waiting = 0
        for line in out.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            if idle(stack):
                waiting += int(count)
                continue
            samples[stage_of(stack)] += int(count)
            functions[stack.split(";")[-1]] += int(count)
    total = sum(samples.values()) or 1
    per_msg_us = cpu_plain / max(plain.accepted, 1) * 1e6
    profiled_us = cpu / max(stats.accepted, 1) * 1e6
    print(f"{stats.accepted} messages relayed in {elapsed:.1f} s ({stats.accepted / elapsed:.0f}"
          f" msg/s profiled); daemon CPU {per_msg_us:.0f} us per message unprofiled "
          f"({profiled_us:.0f} profiled); {total} samples at work "
          f"({waiting} of threads waiting left out)\n")
    print("| stage | share | us per message |\n|---|---:|---:|")
    for label, n in samples.most_common():
        print(f"| {label} | {n / total:.1%} | {n / total * per_msg_us:.0f} |")
    print(f"\nhottest functions (innermost frame), of {total} samples:")
    for fn, n in functions.most_common(args.top):
        print(f"  {n / total:6.1%}  {fn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
