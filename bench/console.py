"""Console page times with a large queue: issue 21's "pages render in under 300 ms with
100,000 queued messages and 1,000 tenants".

    .venv/bin/python bench/console.py [-n 100000] [--tenants 1000] [--sites 2000] [--runs 7]

Fills a fresh spool with N one-recipient messages of `--tenants` tenants to `--sites`
destination sites through `Spool.put` (as ingress writes them; received over the last two
days, so every qshape age bucket has mail), gives each recipient its site and moves its
next attempt a day ahead (a queue waiting on retries: nothing is tried while we measure),
then starts `mta serve` on it (the tenants in its config, one console admin), signs in with
headless Chromium and loads each page `--runs` times. Each load is timed by the browser's
Navigation Timing (performance.getEntriesByType("navigation")): responseStart (the
server's answer begins: what the server costs), domContentLoadedEventEnd and loadEventEnd
(the page is usable / complete), in ms from the start of the navigation. Printed: the
median and the range over the runs, per page, and apart the first load of each page after
sign-in. Before that, the counts the console keeps (mta.console.snapshots) are timed
through the admin API, uncached: GET /api/v1/admin/queue-shape and queue-stats.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sqlite3
import statistics
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
from mta.smtp.auth import hash_password  # noqa: E402
from tests.console.conftest import browser_missing, make_chrome  # noqa: E402
from tests.support.daemon import ADMIN_TOKEN, MtaProcess  # noqa: E402

PASSWORD = "bench console password"
AGE_SPAN = 2 * 86400  # messages received over the last two days
METRICS = ("responseStart", "domContentLoadedEventEnd", "loadEventEnd")


def tenant(i: int) -> str:
    return f"t{i:04d}"


async def fill(spool_dir: Path, n: int, tenants: int, sites: int,
               concurrency: int = 256) -> float:
    spool = await Spool.open(spool_dir, max_batch=1024)
    body = (b"From: bench@example.org\r\nTo: u@d.test\r\nSubject: queued\r\n\r\n"
            + b"x" * 960 + b"\r\n")
    rnd = random.Random(21)
    now = time.time()
    counter = iter(range(n))
    t0 = time.monotonic()

    async def putter() -> None:
        for i in counter:
            env = Envelope(tenant(i % tenants), "bench@example.org",
                           [Recipient(f"u{i}@d{i % sites}.test")], client_ip="127.0.0.1",
                           received_at=now - rnd.random() * AGE_SPAN)
            await spool.put(env, body)

    await asyncio.gather(*(putter() for _ in range(concurrency)))
    elapsed = time.monotonic() - t0
    await spool.close()
    return elapsed


def route_and_defer(spool_dir: Path, sites: int) -> None:
    """Each recipient under its site (as MX rollup names it after routing), waiting a day."""
    for db in spool_dir.glob("spool-*.sqlite"):
        con = sqlite3.connect(db)
        with con:
            con.create_function("site_of", 1, lambda addr: "mx.d{}.test".format(
                int(addr.rsplit("@d", 1)[1].split(".")[0]) % sites))
            con.execute("UPDATE recipients SET site = site_of(address), next_attempt = ?, "
                        "attempts = 1", (time.time() + 86400,))
        con.close()


def config(tenants: int) -> str:
    h = hash_password(PASSWORD, ln=4)  # a cheap scrypt: the bench times pages, not sign-in
    parts = ["[console]\nsign_in_burst = 100\n", f'[console.accounts.bench]\npassword = "{h}"\n'
             'role = "admin"\n']
    parts += [f"[tenants.{tenant(i)}]\n" for i in range(tenants)]
    return "\n" + "\n".join(parts)


def admin_get(url: str) -> bytes:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def sign_in(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/console/sign-in")
    driver.find_element(By.ID, "user").send_keys("bench")
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    driver.find_element(By.ID, "who")


def timing(driver, url: str) -> dict[str, float]:
    driver.get(url)
    nav = driver.execute_script(
        "const e = performance.getEntriesByType('navigation')[0];"
        "return {start: e.startTime, responseStart: e.responseStart, "
        "domContentLoadedEventEnd: e.domContentLoadedEventEnd, "
        "loadEventEnd: e.loadEventEnd, status: e.responseStatus || 200};")
    if "Error" in driver.title:
        raise RuntimeError(f"{url}: {driver.title}")
    return {m: nav[m] - nav["start"] for m in METRICS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--messages", type=int, default=100_000)
    ap.add_argument("--tenants", type=int, default=1000)
    ap.add_argument("--sites", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--dir", type=Path, default=None, help="parent of the work directory")
    args = ap.parse_args()
    missing = browser_missing()
    if missing:
        sys.exit(missing)

    work = Path(tempfile.mkdtemp(prefix="console-bench-", dir=args.dir))
    mta = None
    driver = None
    try:
        spool_dir = work / "spool"
        spool_dir.mkdir()
        fill_s = uvloop.run(fill(spool_dir, args.messages, args.tenants, args.sites))
        route_and_defer(spool_dir, args.sites)
        print(f"spool: {args.messages:,} messages of {args.tenants:,} tenants to "
              f"{args.sites:,} sites, filled in {fill_s:.1f} s")
        mta = MtaProcess(work, config(args.tenants))
        t0 = time.monotonic()
        mta.start(timeout=600)
        print(f"daemon ready in {time.monotonic() - t0:.1f} s")
        base = f"http://127.0.0.1:{mta.http_port}"
        # What the console caches: the counts as the admin API makes them, uncached.
        for path in ("/api/v1/admin/queue-shape", "/api/v1/admin/queue-stats"):
            took = []
            for _ in range(3):
                t1 = time.perf_counter()
                admin_get(base + path)
                took.append((time.perf_counter() - t1) * 1000)
            print(f"{path}: {statistics.median(took):.0f} ms [{min(took):.0f}-{max(took):.0f}]"
                  " (uncached, 3 runs)")
        driver = make_chrome()
        sign_in(driver, base)
        # The Overview the sign-in lands on: its counts were begun by the sign-in itself.
        nav = driver.execute_script(
            "const e = performance.getEntriesByType('navigation')[0];"
            "return [e.startTime, e.redirectEnd, e.responseStart, e.loadEventEnd];")
        print(f"Overview after sign-in (POST, 303, GET): responseStart {nav[2] - nav[0]:.0f} "
              f"ms, loadEventEnd {nav[3] - nav[0]:.0f} ms from the POST; from the GET "
              f"{nav[2] - nav[1]:.0f} / {nav[3] - nav[1]:.0f} ms")
        middle = tenant(args.tenants // 2)
        pages = [("Overview", "/console/"), ("Queue", "/console/queue"),
                 ("Queue: one site", "/console/queue?site=mx.d7.test"),
                 ("Tenants", "/console/tenants"), ("Tenants, page 5", "/console/tenants?page=4"),
                 (f"Tenant {middle}", f"/console/tenants/{middle}"),
                 ("Delivery paths", "/console/paths"), ("Events", "/console/events")]
        results: dict[str, dict[str, list[float]]] = {}
        for _ in range(args.runs + 1):  # round-robin: a slow moment hits every page alike
            for name, path in pages:
                t = timing(driver, base + path)
                for m, v in t.items():
                    results.setdefault(name, {}).setdefault(m, []).append(v)
        print(f"\nms from navigation start. first: the page's first load after sign-in, "
              f"responseStart / loadEventEnd; then the median [min-max] of the {args.runs} "
              "loads after it\n")
        cols = ["first (resp / load)", *METRICS]
        print(f"| {'page':<18} | " + " | ".join(f"{c:<24}" for c in cols) + " |")
        print(f"|{'-' * 20}|" + "|".join("-" * 26 for _ in cols) + "|")
        for name, _ in pages:
            r = results[name]
            cells = [f"{r['responseStart'][0]:.0f} / {r['loadEventEnd'][0]:.0f}"]
            for m in METRICS:
                v = r[m][1:]
                cells.append(f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]")
            print(f"| {name:<18} | " + " | ".join(f"{c:<24}" for c in cells) + " |")
    finally:
        if driver is not None:
            driver.quit()
        if mta is not None:
            mta.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
