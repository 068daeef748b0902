"""`[server] workers = 2` for real: one `mta serve` supervising two worker processes on one
Redis. Connections spread over both workers' shards; one admin API lists, shows and acts
on every shard's messages, and one /metrics counts both; kill -9 of a worker loses none of
what it acknowledged and the supervisor brings it back; SIGTERM stops everything with 0;
the credit race over many sessions spread over the workers is exact."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import smtplib
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import redis

from mta.smtp.auth import hash_password
from mta.webhooks.endpoints import Endpoints
from tests.integration.test_policy_smtp import PW
from tests.support.daemon import ADMIN_TOKEN
from tests.support.receiver import WebhookReceiver


def _send(mta, n: int, user: str | None = None) -> list[str]:
    ids = []
    for i in range(n):  # a new connection each: the kernel spreads them over the workers
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=20) as s:
            s.ehlo("client.test")
            if user:
                s.login(user, PW)
            code, text = s.mail("app@shop.test")
            assert code == 250, text
            code, text = s.rcpt(f"r{i}@dest.test")
            if code != 250:
                ids.append("")
                continue
            code, text = s.data(f"Subject: {i}\r\n\r\nhi\r\n".encode())
            ids.append(text.decode().rsplit(" ", 1)[-1] if code == 250 else "")
    return ids


def _admin(mta, method: str, path: str) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _workers(mta) -> list[int]:
    """Pids of the supervisor's children that serve (not signing or content helpers)."""
    out = []
    for stat in os.listdir("/proc"):
        if not stat.isdigit():
            continue
        try:
            with open(f"/proc/{stat}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{stat}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if int(fields[1]) == mta.proc.pid and b"MTA_WORKER=" in env:
            out.append(int(stat))
    return sorted(out)


def _metrics(mta) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        return r.read().decode()


def _flush(url: str) -> None:
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()


async def test_two_workers_one_admin_api_and_kill_9_of_one(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/9"
    _flush(url)
    mta = await asyncio.to_thread(
        mta_factory, f'[cluster]\nredis_url = "{url}"\n')
    # mta_factory wrote [server] without workers: add it and restart as a supervisor.
    mta.kill()
    text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)
    ids = await asyncio.to_thread(_send, mta, 40)
    assert all(ids), ids
    shards = {i[-2:] for i in ids}
    assert shards == {"00", "01"}, shards  # both workers took mail
    status, doc = await asyncio.to_thread(_admin, mta, "GET", "/api/v1/admin/queue?limit=1000")
    assert status == 200 and sorted(m["id"] for m in doc["messages"]) == sorted(ids)
    other = next(i for i in ids if i.endswith("01"))
    status, shown = await asyncio.to_thread(_admin, mta, "GET", f"/api/v1/admin/queue/{other}")
    assert status == 200 and shown["id"] == other
    status, _ = await asyncio.to_thread(_admin, mta, "POST", f"/api/v1/admin/queue/{other}/hold")
    assert status == 200
    status, shown = await asyncio.to_thread(_admin, mta, "GET", f"/api/v1/admin/queue/{other}")
    assert shown["state"] == "held"
    listed = await asyncio.to_thread(mta.cli, "queue", "list", "--json", "--limit", "1000")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["messages"]) == 40
    # qshape's counts reach every shard: 39 recipients to deliver, 1 held.
    status, shape = await asyncio.to_thread(_admin, mta, "GET", "/api/v1/admin/queue-shape")
    assert status == 200, shape
    assert sum(n for _, held, _, n in shape["rows"] if not held) == 39
    assert sum(n for _, held, _, n in shape["rows"] if held) == 1
    metrics = await asyncio.to_thread(_metrics, mta)
    got = {w: float(v) for w, v in re.findall(
        r'mta_messages_received_total\{tenant="default",worker="(\d)"\} (\S+)', metrics)}
    assert set(got) == {"0", "1"} and sum(got.values()) == 40, got

    # kill -9 of worker 1: the supervisor starts it again; its shard's mail is all there.
    victim = _workers(mta)[1]
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        pids = _workers(mta)
        if len(pids) == 2 and victim not in pids:
            status, doc = await asyncio.to_thread(_admin, mta, "GET",
                                                  "/api/v1/admin/queue?limit=1000")
            if status == 200 and len(doc["messages"]) == 40:
                break
        assert time.monotonic() < deadline, mta.stderr
        await asyncio.sleep(0.2)
    assert "restarting it" in mta.stderr
    # `mta drain` through worker 0 drains every worker: no connection is greeted.
    out = await asyncio.to_thread(mta.cli, "drain", "--reason", "move")
    assert out.returncode == 0, out.stderr
    for _ in range(10):  # new connections land on either worker
        with smtplib.SMTP(timeout=10) as s:
            code, _msg = s.connect("127.0.0.1", mta.smtp_port)
            assert code == 421, code
    assert mta.terminate() == 0


async def test_credit_race_over_two_workers_is_exact(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/8"
    _flush(url)
    pw = hash_password(PW, ln=10)
    toml = f"""
[cluster]
redis_url = "{url}"
[tenants.shop]
prepaid = true
[users.shop]
tenant = "shop"
password = "{pw}"
"""
    mta = await asyncio.to_thread(mta_factory, toml)
    await asyncio.to_thread(
        lambda: urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{mta.http_port}/api/v1/admin/tenants/shop/credits",
            data=b'{"amount": 30, "paid": true}', method="POST",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                     "Content-Type": "application/json"}), timeout=10).status)
    mta.kill()
    text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)
    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: _send(mta, 1, "shop")[0], range(50)))
    accepted = [r for r in results if r]
    assert len(accepted) == 30, results  # 30 credits: exactly 30 of 50 sessions got a 250
    assert {r[-2:] for r in accepted} == {"00", "01"}
    assert mta.terminate() == 0


def _children(parent: int, name: bytes) -> list[int]:
    """Pids of `parent`'s children whose program is `name`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{pid}/comm", "rb") as f:  # redis-server rewrites its cmdline
                comm = f.read().strip()
        except OSError:
            continue
        if ppid == parent and comm == name:
            out.append(int(pid))
    return out


def _running(pid: int) -> bool:
    """Alive and not a zombie (a dead child of a dead parent waits for init to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _post_credits(mta, amount: int, tenant: str = "shop") -> int:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}/api/v1/admin/tenants/{tenant}/credits",
        data=json.dumps({"amount": amount, "paid": True}).encode(), method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


async def test_workers_without_redis_share_an_embedded_store(mta_factory):
    """No [cluster] redis_url: the supervisor runs a private redis-server on a Unix socket
    in the spool. The credit race over both workers is exact through it; kill -9 of it
    loses no charge (its file is synced at every write) and it is started again."""
    toml = f"""
[tenants.shop]
prepaid = true
[users.shop]
tenant = "shop"
password = "{hash_password(PW, ln=10)}"
"""
    mta = await asyncio.to_thread(mta_factory, toml)
    mta.kill()
    text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)
    sock = mta.workdir / "spool" / "store" / "redis.sock"
    assert sock.is_socket() and oct(os.stat(sock.parent).st_mode & 0o777) == "0o700"
    supervisor = mta.proc.pid
    [store] = _children(supervisor, b"redis-server")
    assert await asyncio.to_thread(_post_credits, mta, 30) == 201

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(lambda _: _send(mta, 1, "shop")[0], range(50)))
    accepted = [r for r in results if r]
    assert len(accepted) == 30, results
    assert {r[-2:] for r in accepted} == {"00", "01"}  # both workers charged the one balance

    os.kill(store, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while not [p for p in _children(supervisor, b"redis-server") if p != store]:
        assert time.monotonic() < deadline, mta.stderr
        await asyncio.sleep(0.1)
    assert "the embedded store exited" in mta.stderr
    # Every charge survived: the balance is spent, the next message is refused.
    deadline = time.monotonic() + 20
    while True:
        status, summary = await asyncio.to_thread(
            _admin, mta, "GET", "/api/v1/admin/tenants/shop/credits")
        if status == 200 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (status, summary["balance"]) == (200, 0), summary
    assert await asyncio.to_thread(_send, mta, 4, "shop") == ["", "", "", ""]
    assert await asyncio.to_thread(_post_credits, mta, 2) == 201
    assert sum(1 for r in await asyncio.to_thread(_send, mta, 4, "shop") if r) == 2

    assert mta.terminate() == 0
    assert not _children(supervisor, b"redis-server")


async def test_kill_9_of_the_supervisor_takes_its_workers_and_store_along(mta_factory):
    """Outside systemd (which stops the whole cgroup) a supervisor killed by -9 must not
    leave workers serving its shards and listeners, nor its store: the kernel sends each
    child SIGTERM when it dies (PR_SET_PDEATHSIG), and the next `mta serve` starts clean."""
    mta = await asyncio.to_thread(mta_factory)
    mta.kill()
    text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)
    supervisor = mta.proc.pid
    children = _workers(mta) + _children(supervisor, b"redis-server")
    assert len(children) == 3
    mta.kill()  # SIGKILL to the supervisor alone
    deadline = time.monotonic() + 30
    while [p for p in children if _running(p)]:
        assert time.monotonic() < deadline, "children outlived the supervisor"
        await asyncio.sleep(0.1)
    await asyncio.to_thread(mta.start, notified=True)  # the same shards and ports: free again
    assert mta.terminate() == 0


KEY = "k-shop-0123456789abcdef"


def _request(mta, method: str, path: str, body=None, *, token: str | None = ADMIN_TOKEN,
             headers: dict | None = None) -> tuple[int, dict, str]:
    """One request on a new connection (urllib never reuses one): the kernel picks the
    worker. Returns (status, headers, body text)."""
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def test_every_worker_answers_http_and_relays_the_daemon_s_routes_to_worker_0(
        mta_factory):
    """Both workers accept on [http] listen. Injection is answered where it lands, so HTTP
    mail fills both shards; what is the whole daemon's (admin API, /metrics, the console)
    is relayed to worker 0 and answered for every shard, and a relayed request is a network
    request: the admin token is still required, and a client cannot pose as local."""
    mta = await asyncio.to_thread(mta_factory, f'[tenants.shop]\napi_keys = ["{KEY}"]\n')
    mta.kill()
    text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)

    def inject(i: int) -> str:
        status, _, out = _request(mta, "POST", "/api/v1/messages", {
            "from": "app@shop.test", "to": [f"r{i}@dest.test"], "subject": f"m{i}",
            "text": "hello"}, token=KEY)
        assert status == 202, out
        return json.loads(out)["id"]

    ids = [await asyncio.to_thread(inject, i) for i in range(30)]
    assert {i[-2:] for i in ids} == {"00", "01"}  # both workers took HTTP mail

    def admin_round() -> tuple[set, set]:
        listings, refusals = set(), set()
        for _ in range(12):  # new connections: some land on worker 1 and are relayed
            status, _, doc = _request(mta, "GET", "/api/v1/admin/queue?limit=1000")
            listings.add((status, len(json.loads(doc)["messages"])))
        for _ in range(4):  # (under [http] auth_fail_burst: these are 401s, not 429s)
            refusals.add(_request(mta, "GET", "/api/v1/admin/queue", token=None)[0])
            refusals.add(_request(mta, "GET", "/api/v1/admin/queue", token=None,
                                  headers={"X-Mta-Client": "127.0.0.1"})[0])
        return listings, refusals

    assert await asyncio.to_thread(admin_round) == ({(200, 30)}, {401})
    # Filters reach every shard: one tenant's messages, those with a recipient at a site.
    for query, n in (("tenant=shop", 30), ("tenant=other", 0), ("site=", 30),
                     ("site=dest.test&tenant=shop", 0)):
        status, _, doc = await asyncio.to_thread(
            _request, mta, "GET", f"/api/v1/admin/queue?limit=1000&{query}")
        assert (status, len(json.loads(doc)["messages"])) == (200, n), query
    # One /metrics for the daemon, whichever worker took the connection.
    for _ in range(6):
        metrics = await asyncio.to_thread(_metrics, mta)
        got = re.findall(r'mta_messages_received_total\{tenant="shop",worker="(\d)"\} (\S+)',
                         metrics)
        assert {w for w, _ in got} == {"0", "1"} and sum(float(v) for _, v in got) == 30
    # The console's sign-in page, through either worker.
    for _ in range(6):
        status, _, page = await asyncio.to_thread(_request, mta, "GET", "/console/login",
                                                  token=None)
        assert status == 200 and "<form" in page
    assert mta.terminate() == 0


async def test_failed_webhooks_of_every_worker_are_listed_and_replayed(mta_factory):
    """Each worker has its own webhook outbox; `mta webhooks failed` and `replay` (worker
    0's admin API) cover every worker's."""
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(mta_factory, """
[webhooks]
batch_wait = "50ms"
retry_initial = "200ms"
retry_max = "500ms"
retry_for = "1s"
""")
        mta.kill()
        text = mta.config_path.read_text().replace('[server]\n', '[server]\nworkers = 2\n', 1)
        mta.config_path.write_text(text)
        await asyncio.to_thread(mta.start, notified=True)
        out = await asyncio.to_thread(mta.cli, "webhooks", "add", rx.url, "--json",
                                      "--events", "received")
        assert out.returncode == 0, out.stderr
        rx.secret = json.loads(out.stdout)["secret"]
        rx.status = 500
        await asyncio.sleep(Endpoints.REFRESH + 0.5)  # worker 1 reads the new endpoint
        ids = await asyncio.to_thread(_send, mta, 16)
        assert {i[-2:] for i in ids} == {"00", "01"}
        deadline = time.monotonic() + 20
        while True:
            failed = await asyncio.to_thread(mta.cli, "webhooks", "failed", "--json")
            rows = json.loads(failed.stdout) if failed.returncode == 0 else []
            if sum(r["events"] for r in rows) >= 16:
                break
            assert time.monotonic() < deadline, failed.stdout + failed.stderr
            await asyncio.sleep(0.2)
        rx.status = 200
        out = await asyncio.to_thread(mta.cli, "webhooks", "replay")
        assert out.returncode == 0, out.stderr
        got = await rx.wait_events(lambda e: e["event"] == "received", 16)
        assert sorted(e["id"] for e in got) == sorted(ids)
        assert mta.terminate() == 0
    finally:
        await rx.stop()
