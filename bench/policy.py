"""The cost of the commercial policy: ingest throughput of a tenant under credits, quotas
and a licence, against a tenant with nothing to count. Target: policy costs under 10%.

    .venv/bin/python bench/policy.py [--messages 3000] [--concurrency 20] [--size 1024]
        [--runs 3] [--domains 1000] [--json FILE]

Starts `mta serve` twice (tests/support/daemon.py, loopback only, spool in a temp dir,
DNS pointed at a closed loopback port so accepted mail stays queued: this measures ingest,
which is where policy runs) with generated configs:

    none    the relayed `default` tenant with no plan, no credits, no licence: MAIL FROM
            finds nothing to count and recipients pass without a policy-store write
    policy  `default` is prepaid (credits added with `mta policy credits add default N
            --paid`), on a plan with a daily message quota and a monthly unique-recipient
            quota (both far above the load, so they count but never refuse), and a signed
            volume licence of a large monthly volume: every recipient reserves a credit,
            two quota counters, a unique-recipient row and the licence counter

End to end (delivered to sinks over Unbound-resolved MX hosts), the same set-up runs under
`bench/run.py --scenario relay-1k --policy` (compare with the run without `--policy`).

Both are driven by bench/ingest.py's load generator (reused, pipelined sessions; one
recipient per message spread over --domains domains, so unique recipients grow), in
alternating rounds (none, policy, none, policy, ...) after one warm-up round each. Prints
per round and as medians: accepted msg/s, the daemon's CPU ms per message
(/proc/PID/stat), and the policy mode's cost as 1 - throughput ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import ingest  # noqa: E402  (bench/ingest.py: the load generator)

from mta.policy.licence import generate_licence_keypair, issue_licence  # noqa: E402
from tests.support.daemon import MtaProcess  # noqa: E402

MODES = ("none", "policy")
# Far above any load this runs: the quotas and the licence count on every recipient but
# never refuse, so both modes accept the same messages.
HUGE = 1_000_000_000
# Accepted mail is never retried during a run: only ingest is measured.
DELIVERY = 'retry = ["1h"]\n'


def policy_toml(workdir: Path) -> str:
    private, public = generate_licence_keypair()
    today = dt.date.today()
    licence = workdir / "mta.licence"
    licence.write_text(issue_licence(
        private, licensee="Bench Ltd", valid_from=today - dt.timedelta(days=1),
        valid_until=today + dt.timedelta(days=365), monthly_volume=HUGE,
        max_connections=100))
    return f"""
[policy]
licence_file = "{licence}"
licence_public_key = "{public}"

[plans.bench]
messages_per_day = {HUGE}
unique_recipients_per_month = {HUGE}

[tenants.default]
plan = "bench"
prepaid = true
"""


def start(mode: str, workdir: Path, credits: int) -> MtaProcess:
    workdir.mkdir(parents=True)
    mta = MtaProcess(workdir, policy_toml(workdir) if mode == "policy" else "",
                     delivery_extra=DELIVERY)
    mta.start(timeout=60)
    if mode == "policy":
        proc = mta.cli("policy", "credits", "add", "default", str(credits), "--paid")
        if proc.returncode != 0:
            mta.kill()
            raise RuntimeError(f"mta policy credits add: {proc.stderr}")
    return mta


def load(mta: MtaProcess, args: argparse.Namespace, messages: int) -> dict:
    """One round of bench/ingest.py against `mta`: accepted msg/s and daemon CPU."""
    assert mta.proc is not None
    pid = mta.proc.pid
    la = argparse.Namespace(host="127.0.0.1", port=mta.smtp_port, messages=messages,
                            concurrency=args.concurrency, size=args.size, reuse=True,
                            rcpts=1, domain="bench.test", domain_count=args.domains,
                            stamp=False)
    stats = ingest.Stats()
    cpu0 = ingest.proc_cpu(pid)
    t0 = time.perf_counter()
    ingest._runner()(ingest.run_load(la, stats, False))
    elapsed = time.perf_counter() - t0
    cpu = ingest.proc_cpu(pid) - cpu0
    if stats.errors or stats.rejected:
        raise RuntimeError(f"{stats.errors} errors, {stats.rejected} rejected: "
                           f"{stats.last_error}")
    return {"accepted": stats.accepted, "elapsed": elapsed,
            "rate": stats.accepted / elapsed,
            "cpu_ms_per_msg": cpu / max(stats.accepted, 1) * 1000}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=3000, help="per round and mode")
    ap.add_argument("-c", "--concurrency", type=int, default=20, help="SMTP sessions")
    ap.add_argument("-s", "--size", type=int, default=1024, help="message size in bytes")
    ap.add_argument("--runs", type=int, default=3, help="measured rounds per mode")
    ap.add_argument("--domains", type=int, default=1000,
                    help="recipient domains (unique recipients grow with them)")
    ap.add_argument("--json", help="write the rounds and medians here")
    args = ap.parse_args(argv)
    warmup = max(args.messages // 5, 1)
    rounds: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory(prefix="mta-bench-policy-") as tmp:
        daemons: dict[str, MtaProcess] = {}
        try:
            for mode in MODES:
                daemons[mode] = start(mode, Path(tmp) / mode,
                                      credits=warmup + args.messages * args.runs)
                load(daemons[mode], args, warmup)  # caches, SQLite pages, JIT-free warm-up
            for run in range(args.runs):
                for mode in MODES:  # alternating: drift of the machine hits both
                    r = load(daemons[mode], args, args.messages)
                    rounds[mode].append(r)
                    print(f"round {run + 1} {mode:<6}: {r['rate']:8.0f} msg/s, "
                          f"server CPU {r['cpu_ms_per_msg']:.3f} ms/msg", flush=True)
        finally:
            for mta in daemons.values():
                mta.kill()
    med = {m: {"rate": statistics.median(r["rate"] for r in rounds[m]),
               "cpu_ms_per_msg": statistics.median(r["cpu_ms_per_msg"] for r in rounds[m])}
           for m in MODES}
    ratio = med["policy"]["rate"] / med["none"]["rate"]
    cpu_extra = med["policy"]["cpu_ms_per_msg"] - med["none"]["cpu_ms_per_msg"]
    print()
    print(f"{'mode':<8}{'msg/s':>10}{'CPU ms/msg':>12}   ({args.messages} messages x "
          f"{args.runs} rounds, {args.concurrency} sessions, {args.size} B)")
    for m in MODES:
        print(f"{m:<8}{med[m]['rate']:>10.0f}{med[m]['cpu_ms_per_msg']:>12.3f}")
    cost = 1 - ratio
    print(f"throughput ratio policy/none: {ratio:.3f}; policy costs {cost:.1%} of "
          f"throughput (target < 10%: {'met' if cost < 0.10 else 'NOT met'}), "
          f"{cpu_extra:+.3f} ms of server CPU per message")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "rounds": rounds, "median": med, "ratio": ratio,
            "cost": cost, "cpu_ms_per_msg_extra": cpu_extra}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
