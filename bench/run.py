"""`make bench`: mta (and optionally a private Postfix) under the same loads, side by side.

    .venv/bin/python bench/run.py [--quick] [--peer postfix|plain] [--scenario NAME ...]
        [--messages N] [--queue-messages N] [--size BYTES] [--connections C]
        [--rcpts R] [--runs K] [--policy] [--dkim ALG] [--chunking] [--publish]

Sets up everything itself, on loopback only, and stops it all at the end (even on error):
a test DNS server (Unbound, tests/support/dnsserver.py) with one site (dest.test) and
1,000 domains over 10 sites (d0..d999.bench.test); sink SMTP servers (bench/sink.py) on
127.0.0.2-11 that count what they hold; mta (`mta serve`, spool in a temp dir, synchronous
fsync as shipped); the load generator (bench/ingest.py, reused connections, pipelined).
With `--peer postfix` a private Postfix (bench/postfix.py) takes the same loads, runs
alternating A B B A. With `--peer plain`, the peer is mta itself without `--policy` and
`--dkim`: what those cost, e.g. issue 5's `--scenario relay-1k --policy --peer plain
--runs 7` (single runs on a shared VM move by up to 25%: alternate, read the medians).
Results: bench/results/<stamp>.json and .md, PNGs from bench/plot.py;
`--publish` also copies the chosen plots and the table to bench/plots/ for the README.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import postfix as pfmod  # noqa: E402  (bench/postfix.py)
import procstat  # noqa: E402

from tests.support.daemon import MtaProcess  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402

RESULTS = HERE / "results"
# Large-queue scenario: both MTAs retry every 20s, so once the sinks are back the whole
# queue comes due within 20s even if `flush` does nothing (see README, known issues).
QUEUE_RETRY = "20s"
SITES = 10
SINK_HOSTS = [f"127.0.0.{2 + i}" for i in range(SITES)]
ONE_SITE_DOMAIN = "dest.test"
MANY_DOMAIN = "bench.test"  # d0..d999.bench.test


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: str = "relay"  # relay: until the sinks hold all | ingest: sinks stall | queue
    size: int = 1024
    rcpts: int = 1
    domains: int = 0  # 0: one site; N: d0..dN-1.bench.test over SITES sites
    tempfail: float = 0.0
    share: float = 1.0  # of --messages (100 KB messages: fewer)
    mix: str = ""  # bench/sink.py --mix (smart mode): 421/451/slow-down/550 shares
    latency: str = ""  # bench/sink.py --latency: per-domain RCPT delays


SCENARIOS = [
    Scenario("ingest", "ingest only (deliveries stalled), 1 KB", kind="ingest"),
    Scenario("relay-1k", "relay end to end, 1 KB, 1 rcpt, 1 site"),
    Scenario("relay-10k", "relay end to end, 10 KB", size=10 * 1024),
    Scenario("relay-100k", "relay end to end, 100 KB", size=100 * 1024, share=0.25),
    Scenario("rcpt-10", "10 recipients per message, 1 site", rcpts=10, share=0.5),
    Scenario("sites-10", "1,000 domains over 10 sites", domains=1000),
    Scenario("rcpt-10-sites-10", "10 rcpts over 1,000 domains / 10 sites", rcpts=10,
             domains=1000, share=0.5),
    Scenario("tempfail", "10% of RCPTs 451, accepted on retry (1s)", tempfail=0.1),
    Scenario("realistic", "1,000 domains / 10 sites; 1% greetings 421, 3% RCPTs 451, 2% "
             "slow-down, 2% of addresses 550; d1* domains 50 ms slow", domains=1000,
             mix="421:0.01,451:0.03,slow:0.02,550:0.02", latency="d1*.bench.test=50,*=1"),
    Scenario("queue", "large queue, destinations down: restart, then drain", kind="queue"),
]


# --- the world: DNS and sinks --------------------------------------------------------------

def zones() -> dict[str, str]:
    many = "".join(f"d{i} MX 10 mx{i % SITES}.sites\n" for i in range(1000))
    many += "".join(f"mx{j}.sites A {h}\n" for j, h in enumerate(SINK_HOSTS))
    return {ONE_SITE_DOMAIN: f"@ MX 10 mx1\nmx1 A {SINK_HOSTS[0]}\n", MANY_DOMAIN: many}


def common_port() -> int:
    """A port free on every sink address (mta's [delivery] port is one for all MXs)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((SINK_HOSTS[0], 0))
            port = s.getsockname()[1]
        socks = []
        try:
            for h in SINK_HOSTS:
                s = socket.socket()
                socks.append(s)
                s.bind((h, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no port free on all sink addresses")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink:
    """bench/sink.py on all SINK_HOSTS; `stored` follows its report lines."""

    def __init__(self, workdir: Path, port: int, *, tempfail: float = 0.0,
                 stall: bool = False, mix: str = "", latency: str = "",
                 chunking: bool = False) -> None:
        self.json_path = workdir / f"sink-{time.monotonic_ns()}.json"
        cmd = [sys.executable, str(HERE / "sink.py"), "--report", "0.01",
               "--json", str(self.json_path), "--tempfail", str(tempfail)]
        if mix:
            cmd += ["--mix", mix]
        if latency:
            cmd += ["--latency", latency]
        if chunking:
            cmd.append("--chunking")
        for h in SINK_HOSTS:
            cmd += ["--listen", f"{h}:{port}"]
        if stall:
            cmd.append("--stall")
        self.stored = 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL)
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not first.startswith("sink listening"):
            self.stop()
            raise RuntimeError(f"sink did not start: {first!r}")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            # Every recipient with its fate: stored, or refused for good (smart mode).
            m = re.search(r"final=(\d+)", line) or re.search(r"stored=(\d+)", line)
            if m:
                self.stored = int(m.group(1))

    def wait_stored(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.stored < n and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            time.sleep(0.005)  # a round's end is read to ~10 ms (--report 0.01 above)
        return self.stored >= n

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        with contextlib.suppress(OSError, ValueError):
            return json.loads(self.json_path.read_text())
        return {}


# --- the MTAs under test -----------------------------------------------------------------

class MtaSide:
    name = "mta"

    def __init__(self, workdir: Path, dns: DnsServer, sink_port: int, retry: str,
                 connections: int, dkim: str = "", policy: bool = False,
                 workers: int = 1, signing_workers: int | None = None) -> None:
        # The dead-site timer waits as long as a retry, as Postfix's does (its wait is
        # minimal_backoff_time, which bench/postfix.py sets to the same retry).
        extra = f'[shaping.default]\nsuspend_duration = "{retry}"\n'
        self.policy = policy
        if policy:
            # bench/policy.py's set-up: the relayed tenant is prepaid, on daily and
            # unique-recipient quotas, under a signed licence (all far above the load).
            import policy as policy_bench  # bench/policy.py

            extra += policy_bench.policy_toml(workdir)
        if dkim:
            # Sign everything the load generator sends (From: bench@load.test); the
            # verifier side is not timed, so no key needs publishing.
            from mta.dkim.keys import generate_key

            _, pem = generate_key(dkim)
            key = workdir / "dkim.key"
            key.write_bytes(pem)
            key.chmod(0o600)
            if dkim == "rsa-sha256":
                extra += f'[dkim."load.test"]\nselector = "s1"\nkey = "{key}"\n'
            else:
                extra += (f'[dkim."load.test"]\nalgorithms = ["ed25519-sha256"]\n'
                          f'ed25519_selector = "e1"\ned25519_key = "{key}"\n')
            if signing_workers is not None:
                extra += f"[signing]\nworkers = {signing_workers}\n"
        self.proc = MtaProcess(
            workdir, extra,
            dns=dns.nameserver, delivery_port=sink_port,
            delivery_extra=f'retry = ["{retry}"]\nconnection_limit = {connections}\n')
        if workers > 1:  # --workers: a supervisor and N workers on the embedded store
            cfg = self.proc.config_path
            cfg.write_text(cfg.read_text().replace("[server]\n",
                                                   f"[server]\nworkers = {workers}\n", 1))
        self.port = self.proc.smtp_port
        self.spool = workdir / "spool"

    def start(self) -> float:
        t0 = time.monotonic()
        self.proc.start(timeout=60, notified=True)  # every worker listening
        ready = time.monotonic() - t0
        if self.policy:
            proc = self.proc.cli("policy", "credits", "add", "default", "1000000000", "--paid")
            if proc.returncode != 0:
                raise RuntimeError(f"mta policy credits add: {proc.stderr}")
        return ready

    def pid(self) -> int | None:
        p = self.proc.proc
        return p.pid if p is not None and p.poll() is None else None

    def stop(self) -> None:
        if self.pid() is None:
            return
        try:
            self.proc.terminate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def kill(self) -> None:
        self.proc.kill()

    def flush(self) -> None:
        r = self.proc.cli("queue", "flush", timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"mta queue flush: {r.stderr}")

    def spool_bytes(self) -> int:
        return pfmod._du(self.spool)


class PlainMtaSide(MtaSide):
    """mta as shipped, without --policy or --dkim: what those are measured against."""

    name = "mta-plain"


class PostfixSide:
    name = "postfix"

    def __init__(self, workdir: Path, dns: DnsServer, sink_port: int, retry: str,
                 connections: int) -> None:
        # Postfix reads /etc/resolv.conf, which we leave alone: the sites come from a
        # transport map that says what the test DNS says (dest.test and d*.bench.test).
        transport = {"*": f"[{SINK_HOSTS[0]}]:{sink_port}"}
        for i in range(1000):
            transport[f"d{i}.{MANY_DOMAIN}"] = f"[{SINK_HOSTS[i % SITES]}]:{sink_port}"
        self.port = free_port()
        self.pf = pfmod.Postfix(workdir, port=self.port, transport=transport,
                                retry=_seconds(retry), concurrency=connections)

    def start(self) -> float:
        t0 = time.monotonic()
        self.pf.start()
        return time.monotonic() - t0

    def pid(self) -> int | None:
        return self.pf.master_pid() if self.pf.running else None

    def stop(self) -> None:
        self.pf.stop()

    def kill(self) -> None:
        self.pf.abort()

    def flush(self) -> None:
        self.pf.flush()

    def spool_bytes(self) -> int:
        return self.pf.queue_bytes()


def _seconds(d: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(d[:-1]) * units[d[-1]]


# --- one run ----------------------------------------------------------------------------------

def loadgen(port: int, sc: Scenario, n: int, args: argparse.Namespace, out: Path,
            timeout: float) -> dict:
    cmd = [sys.executable, str(HERE / "ingest.py"), "--host", "127.0.0.1", "--port", str(port),
           "-n", str(n), "-c", str(args.connections), "-s", str(sc.size), "--reuse",
           "--quiet", "--stamp", "--json", str(out), "--rcpts", str(sc.rcpts)]
    if sc.domains:
        cmd += ["--domain", MANY_DOMAIN, "--domain-count", str(sc.domains)]
    else:
        cmd += ["--domain", ONE_SITE_DOMAIN]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if not out.exists():
        raise RuntimeError(f"load generator failed: {r.stdout}{r.stderr}")
    return json.loads(out.read_text())


def quantiles(values: list[float]) -> list[float]:
    """201 quantiles (every 0.5%): enough for a distribution plot, small in JSON."""
    if not values:
        return []
    v = sorted(values)
    return [v[min(len(v) - 1, round(q / 200 * (len(v) - 1)))] for q in range(201)]


def pct(q: list[float], p: float) -> float | None:
    return q[round(p * 2)] * 1000 if q else None


def run_one(side_cls, sc: Scenario, run: int, args: argparse.Namespace, dns: DnsServer,
            sink_port: int, top: Path) -> dict:
    n = max(1, round(args.messages * sc.share))
    if sc.kind == "queue":
        n = args.queue_messages
    if args.rcpts and sc.rcpts == 1:
        sc = replace(sc, rcpts=args.rcpts)
    if args.size and sc.kind != "queue" and sc.name in ("ingest", "relay-1k"):
        sc = replace(sc, size=args.size)
    workdir = Path(tempfile.mkdtemp(prefix=f"{sc.name}-{side_cls.name}-", dir=top))
    workdir.chmod(0o755)  # Postfix's unprivileged daemons must reach their directories
    retry = ("1s" if sc.tempfail or sc.mix else QUEUE_RETRY if sc.kind == "queue"
             else "1h")
    if side_cls is MtaSide:
        side = side_cls(workdir, dns, sink_port, retry, args.connections, dkim=args.dkim or "",
                        policy=args.policy, workers=args.workers,
                        signing_workers=args.signing_workers)
    else:
        side = side_cls(workdir, dns, sink_port, retry, args.connections)
    result: dict = {"mta": side.name, "scenario": sc.name, "run": run, "messages": n,
                    "size": sc.size, "rcpts": sc.rcpts}
    sink: Sink | None = None
    timeout = 120 + n * sc.rcpts / 50
    try:
        if sc.kind != "queue":
            sink = Sink(workdir, sink_port, tempfail=sc.tempfail, stall=sc.kind == "ingest",
                        mix=sc.mix, latency=sc.latency, chunking=args.chunking)
        result["ready_s"] = side.start()
        with procstat.Sampler(side.pid) as sampler:
            cpu0 = procstat.tree_cpu(side.pid())
            lg = loadgen(side.port, sc, n, args, workdir / "load.json", timeout)
            accepted = lg["accepted"]
            if sc.kind == "relay":
                ok = sink.wait_stored(accepted * sc.rcpts, timeout)  # type: ignore[union-attr]
                result["complete"] = ok
            cpu1 = procstat.tree_cpu(side.pid())
            if sc.kind == "queue":
                result.update(queue_phase(side, workdir, accepted, sink_port, timeout))
        result.update(
            accepted=accepted, rejected=lg["rejected"], errors=lg["errors"],
            last_error=lg["last_error"], ingest_s=lg["elapsed"],
            ingest_rate=accepted / lg["elapsed"] if lg["elapsed"] else None,
            cpu_s=cpu1 - cpu0, cpu_per_1k=(cpu1 - cpu0) / max(accepted, 1) * 1000,
            peak_rss_mb=sampler.peak_rss / 2**20,
            ingest_q=quantiles(lg["latencies"]), first_time=lg["first_time"],
            ingest_bins=lg["bins"], bin_seconds=lg["bin_seconds"],
            resources=[(t, c, r) for t, c, r in sampler.series])
    finally:
        if sink is not None:
            stats = sink.stop()
        try:
            side.stop()
        except Exception:  # stop it anyway, then report
            side.kill()
            raise
    if sink is not None and sc.kind == "relay":
        span = stats.get("last_time", 0) - result["first_time"]
        result.update(sink_bins=stats.get("bins", []), sink_stored=stats.get("stored"),
                      tempfails=stats.get("tempfails"), refused=stats.get("refused"),
                      slowdowns=stats.get("slowdowns"),
                      greet_refused=stats.get("greet_refused"), e2e_s=span,
                      e2e_rate=result["accepted"] / span if span > 0 else None,
                      delay_q=quantiles(stats.get("delays", [])))
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def queue_phase(side, workdir: Path, accepted: int, sink_port: int,  # type: ignore[no-untyped-def]
                timeout: float) -> dict:
    """Destinations down: let the MTA settle, weigh the queue, restart it, then bring the
    sinks up, flush, and time the drain (first to last delivery: the rate; sinks up to
    last delivery: the time to empty, which includes waiting for the retry)."""
    out: dict = {}
    out["settle_s"] = procstat.wait_idle(side.pid(), timeout=timeout)
    out["queued_rss_mb"] = procstat.tree_rss(side.pid()) / 2**20
    out["spool_mb"] = side.spool_bytes() / 2**20
    side.stop()
    out["restart_s"] = side.start()
    time.sleep(1.0)  # what it holds once up, not the start-up transient
    out["restarted_rss_mb"] = procstat.tree_rss(side.pid()) / 2**20
    sink = Sink(workdir, sink_port)
    try:
        cpu0 = procstat.tree_cpu(side.pid())
        t0 = time.time()
        try:
            side.flush()
        except (RuntimeError, subprocess.SubprocessError) as e:
            out["flush_error"] = str(e)
        out["drain_complete"] = sink.wait_stored(accepted, timeout)
        cpu1 = procstat.tree_cpu(side.pid())
    finally:
        stats = sink.stop()
    first, last = stats.get("first_time", 0), stats.get("last_time", 0)
    out.update(empty_s=last - t0 if last else None,
               drain_rate=accepted / (last - first) if last > first else None,
               drain_cpu_per_1k=(cpu1 - cpu0) / max(accepted, 1) * 1000,
               sink_bins=stats.get("bins", []), drain_start=first or t0)
    return out


# --- machine, tables --------------------------------------------------------------------------

def machine() -> dict:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = int(f.readline().split()[1]) * 1024
    pf = subprocess.run(["postconf", "-dh", "mail_version"], capture_output=True,
                        text=True).stdout.strip() if shutil.which("postconf") else ""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "postfix": pf, "mta_commit": commit, "load_avg_start": os.getloadavg()}


def _med(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def _f(v: float | None, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def table(results: list[dict], peer: str | None) -> str:
    """Medians over runs; the last column is mta / the peer (Postfix, or mta-plain) of the
    headline rate."""
    other = PlainMtaSide.name if peer == "plain" else PostfixSide.name
    lines = ["| scenario | MTA | ingest msg/s | end-to-end msg/s | ingest p50 / p99 ms "
             f"| delivery delay p50 / p99 ms | CPU s / 1k msg | peak PSS MB | mta/{other} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    qlines = ["| MTA | messages | ingest msg/s | spool MB | PSS queued MB | restart s "
              "| PSS restarted MB | drain msg/s | sinks up -> empty s | drain CPU s / 1k |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for sc in SCENARIOS:
        by = {m: [r for r in results if r["scenario"] == sc.name and r["mta"] == m]
              for m in ("mta", other)}
        if not by["mta"] and not by[other]:
            continue
        head = "drain_rate" if sc.kind == "queue" else (
            "e2e_rate" if sc.kind == "relay" else "ingest_rate")
        ratio = None
        if peer and _med(by["mta"], head) and _med(by[other], head):
            ratio = _med(by["mta"], head) / _med(by[other], head)  # type: ignore[operator]
        for m, rows in by.items():
            if not rows:
                continue
            if sc.kind == "queue":
                qlines.append(
                    f"| {m} | {rows[0]['messages']:,} | {_f(_med(rows, 'ingest_rate'))} "
                    f"| {_f(_med(rows, 'spool_mb'), 1)} | {_f(_med(rows, 'queued_rss_mb'), 1)} "
                    f"| {_f(_med(rows, 'restart_s'), 2)} "
                    f"| {_f(_med(rows, 'restarted_rss_mb'), 1)} | {_f(_med(rows, 'drain_rate'))} "
                    f"| {_f(_med(rows, 'empty_s'), 1)} "
                    f"| {_f(_med(rows, 'drain_cpu_per_1k'), 2)} |")
            ip50 = _med([{"v": pct(r["ingest_q"], 50)} for r in rows], "v")
            ip99 = _med([{"v": pct(r["ingest_q"], 99)} for r in rows], "v")
            dp50 = _med([{"v": pct(r.get("delay_q", []), 50)} for r in rows], "v")
            dp99 = _med([{"v": pct(r.get("delay_q", []), 99)} for r in rows], "v")
            incomplete = any(r.get("complete") is False or r.get("drain_complete") is False
                             or r.get("errors") for r in rows)
            lines.append(
                f"| {sc.name}{' (incomplete!)' if incomplete else ''} | {m} "
                f"| {_f(_med(rows, 'ingest_rate'))} | {_f(_med(rows, 'e2e_rate'))} "
                f"| {_f(ip50, 1)} / {_f(ip99, 1)} | {_f(dp50, 0)} / {_f(dp99, 0)} "
                f"| {_f(_med(rows, 'cpu_per_1k'), 2)} | {_f(_med(rows, 'peak_rss_mb'), 0)} "
                f"| {_f(ratio, 2) + '×' if ratio and m == 'mta' else ''} |")
    out = "\n".join(lines)
    if len(qlines) > 2:
        out += "\n\nLarge queue, destinations down (then up):\n\n" + "\n".join(qlines)
    return out


def describe(m: dict) -> str:
    return (f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, Linux "
            f"{m['kernel']}, Python {m['python']}"
            + (f", Postfix {m['postfix']}" if m.get("postfix") else "")
            + f", mta {m['mta_commit']}")


# --- main -----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", action="append", choices=[s.name for s in SCENARIOS],
                    help="repeatable; default: all")
    ap.add_argument("--messages", type=int, help="per scenario (default 10,000; quick 1,000)")
    ap.add_argument("--queue-messages", type=int,
                    help="large-queue scenario (default 100,000; quick 3,000)")
    ap.add_argument("--dkim", choices=["rsa-sha256", "ed25519-sha256"],
                    help="mta signs every message with a key of this algorithm")
    ap.add_argument("--policy", action="store_true",
                    help="mta's relayed tenant under credits, quotas and a licence "
                         "(bench/policy.py's set-up)")
    ap.add_argument("--size", type=int, help="bytes, for ingest and relay-1k (default 1024)")
    ap.add_argument("--connections", type=int, default=20,
                    help="client sessions, and each MTA's connections per site")
    ap.add_argument("--rcpts", type=int, help="recipients per message where it is 1")
    ap.add_argument("--peer", choices=["postfix", "plain"],
                    help="run the same loads on Postfix, or on mta without --policy and "
                         "--dkim (plain)")
    ap.add_argument("--workers", type=int, default=1,
                    help="mta's [server] workers (above 1: on its embedded store)")
    ap.add_argument("--signing-workers", type=int,
                    help="with --dkim: mta's [signing] workers (default: its own default)")
    ap.add_argument("--chunking", action="store_true",
                    help="the sinks offer RFC 3030 CHUNKING, as large receivers do (mta "
                         "then sends BDAT with the envelope: one round trip a message)")
    ap.add_argument("--runs", type=int, help="runs per MTA, alternated (default 2; quick 1)")
    ap.add_argument("--quick", action="store_true", help="a few thousand messages, 1 run")
    ap.add_argument("--publish", action="store_true",
                    help="copy the table and chosen plots to bench/plots/ (for the README)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dirs (spools, logs)")
    ap.add_argument("--tmp", help="where spools go (default: the system temp dir)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="default: bench/results")
    args = ap.parse_args(argv)
    args.messages = args.messages or (1000 if args.quick else 10_000)
    args.queue_messages = args.queue_messages or (3000 if args.quick else 100_000)
    args.runs = args.runs or (1 if args.quick else 2)
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    sides: list[type] = [MtaSide]
    if args.peer == "postfix":
        pfmod.ensure_installed()
        sides.append(PostfixSide)
    elif args.peer == "plain":
        if not (args.policy or args.dkim):
            ap.error("--peer plain measures --policy or --dkim against mta without them")
        sides.append(PlainMtaSide)

    results_dir: Path = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    info = machine()
    print(f"machine: {describe(info)}", flush=True)
    top = Path(tempfile.mkdtemp(prefix="mta-bench-", dir=args.tmp))
    top.chmod(0o755)
    results: list[dict] = []
    t_start = time.monotonic()
    dns = DnsServer(zones(), top / "dns")
    try:
        dns.start()
        sink_port = common_port()
        for sc in chosen:
            for run in range(args.runs):
                # A B B A A B ...: neither side always runs first (after the other's
                # teardown, with the page cache still flushing it).
                for side_cls in (sides if run % 2 == 0 else sides[::-1]):
                    r = run_one(side_cls, sc, run, args, dns, sink_port, top)
                    results.append(r)
                    print(f"{sc.name:>17} {r['mta']:>8} run {run + 1}: "
                          f"ingest {_f(r.get('ingest_rate'))}/s "
                          f"e2e {_f(r.get('e2e_rate') or r.get('drain_rate'))}/s "
                          f"cpu {_f(r['cpu_per_1k'], 2)}s/1k "
                          f"rss {_f(r['peak_rss_mb'])}MB"
                          + ("" if not r.get("errors") else f" errors {r['errors']}: "
                             f"{r['last_error']}"), flush=True)
    finally:
        dns.stop()
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
    info["wall_s"] = time.monotonic() - t_start
    doc = {"machine": info, "args": {k: str(v) if isinstance(v, Path) else v
                                     for k, v in vars(args).items()},
           "results": results}
    path = results_dir / f"{stamp}.json"
    path.write_text(json.dumps(doc))
    md = (f"Machine: {describe(info)}.\n`{' '.join(['bench/run.py', *(argv or sys.argv[1:])])}`"
          f", {args.runs} run(s) per MTA, medians.\n\n{table(results, args.peer)}\n")
    (results_dir / f"{stamp}.md").write_text(md)
    print("\n" + md)
    print(f"results: {path} ({info['wall_s']:.0f}s)")
    try:
        import plot
        pngs = plot.plot_all(doc, results_dir / stamp)
        print(f"plots: {results_dir / stamp}/ ({len(pngs)} PNGs)")
        if args.publish:
            dest = HERE / "plots"
            dest.mkdir(exist_ok=True)
            for p in pngs:
                if p.stem in plot.PUBLISHED:
                    shutil.copy(p, dest / p.name)
            (dest / "results.md").write_text(md)
    except ImportError as e:
        print(f"no plots: {e} (pip install matplotlib)")
    return 0 if all(not r.get("errors") and r.get("complete", True)
                    and r.get("drain_complete", True) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
