"""Two real `mta serve` nodes sharing one real Redis ([cluster] redis_url), each with its own
spool: credits and quotas stay exact across nodes (DESIGN.md: "no overspend, no double
count, on one node and across nodes"), also when one node is killed mid-race and restarted.

Each test uses a Redis database of its own (flushed first), so that the daemons' default
key prefixes never meet another test's state.
"""

from __future__ import annotations

import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from mta.smtp.auth import hash_password
from tests.integration.test_policy_smtp import PW, _admin, _msg, _session, _tenants_toml
from tests.support.daemon import MtaProcess, free_port

# Client threads: enough to race, few enough for a 2-core machine shared with others.
_THREADS = 16


def _cluster(mta_factory, redis_url: str, db: int, extra: str = "") -> list[MtaProcess]:
    """Two nodes on Redis database `db` (emptied first)."""
    url = redis_url.rsplit("/", 1)[0] + f"/{db}"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    toml = _tenants_toml() + extra + f'\n[cluster]\nredis_url = "{url}"\n'
    return [mta_factory(toml), mta_factory(toml)]


def _queued(node: MtaProcess) -> list[str]:
    """Every recipient in the node's queue."""
    return [r["address"] for m in node.queue_list() for r in m["recipients"]]


def _history(node: MtaProcess, tenant: str) -> list[dict]:
    return _admin(node, "GET", f"/api/v1/admin/tenants/{tenant}/credits/history?limit=10000"
                  )["entries"]


def _try_message(port: int, user: str, rcpts: list[str], mid: str) -> list[str]:
    """One session: the recipients accepted with the message's 250 (none if it failed)."""
    accepted = []
    with _session(port, user) as s:
        s.mail(f"a@{user}.test")
        for rcpt in rcpts:
            if s.rcpt(rcpt)[0] == 250:
                accepted.append(rcpt)
        if accepted and s.data(_msg(mid))[0] != 250:
            return []
    return accepted


def _race(nodes: tuple[MtaProcess, ...], user: str, sessions: int) -> list[str]:
    """`sessions` sessions of `user`, 3 recipients each, spread over the nodes, _THREADS at
    a time: the recipients accepted with their message's 250."""
    def client(i: int) -> list[str]:
        node = nodes[i % len(nodes)]
        return _try_message(node.smtp_port, user, [f"r{i}-{j}@dest.test" for j in range(3)],
                            f"<race{i}@{user}.test>")

    with ThreadPoolExecutor(_THREADS) as pool:
        return [r for rs in pool.map(client, range(sessions)) for r in rs]


def test_fifty_sessions_on_two_nodes_race_for_the_last_100_credits(mta_factory, redis_url):
    a, b = _cluster(mta_factory, redis_url, db=1)
    _admin(a, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": 100, "paid": True})

    accepted = _race((a, b), "shop", sessions=50)
    assert len(accepted) == 100
    assert sorted(_queued(a) + _queued(b)) == sorted(accepted)
    assert {len(_queued(a)), len(_queued(b))} != {0, 100}  # both nodes took a share
    for node in (a, b):  # either node sees the same wallet
        summary = _admin(node, "GET", "/api/v1/admin/tenants/shop/credits")
        assert (summary["balance"], summary["held"]) == (0, 0)
    kinds = Counter(e["kind"] for e in _history(b, "shop"))
    assert kinds == {"add": 1, "reserve": 100}


def test_a_daily_quota_is_shared_by_the_nodes(mta_factory, redis_url):
    extra = f"""
[plans.daily]
messages_per_day = 30

[tenants.bulk]
plan = "daily"

[users.bulk]
tenant = "bulk"
password = "{hash_password(PW, ln=10)}"
"""
    a, b = _cluster(mta_factory, redis_url, db=2, extra=extra)

    accepted = _race((a, b), "bulk", sessions=20)
    assert len(accepted) == 30
    assert len(_queued(a)) + len(_queued(b)) == 30
    for node in (a, b):
        usage = {u["name"]: u["used"] for u in _admin(
            node, "GET", "/api/v1/admin/tenants/bulk/limits")["usage"] if u["tenant"] == "bulk"}
        assert usage["messages_per_day"] == 30
        with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/metrics",
                                    timeout=10) as r:
            assert ('mta_tenant_quota_used{limit="messages_per_day",tenant="bulk"} 30.0'
                    in r.read().decode())


def test_a_node_killed_mid_race_loses_no_credit_and_charges_none_twice(mta_factory,
                                                                         redis_url):
    a, b = _cluster(mta_factory, redis_url, db=3)
    # Fewer credits than node A's racers alone ask for: the wallet runs dry mid-race too.
    credits = 60
    _admin(a, "POST", "/api/v1/admin/tenants/shop/credits", {"amount": credits, "paid": True})

    # Five sessions on node B hold 15 reservations and are mid-transaction (no DATA yet)
    # when B is killed: B must give those credits back when it comes back.
    holding, crashed = threading.Barrier(6, timeout=30), threading.Event()

    def holder(i: int) -> int:
        with _session(b.smtp_port, "shop") as s:
            s.mail("a@shop.test")
            n = sum(s.rcpt(f"h{i}-{j}@dest.test")[0] == 250 for j in range(3))
            holding.wait()
            crashed.wait(30)
            with pytest.raises((OSError, EOFError)):  # smtplib errors are OSErrors
                s.data(_msg(f"<hold{i}@shop.test>"))
            return n

    finished = Counter[str]()

    def racer(i: int) -> list[str]:
        node = (a, b)[i % 2]
        try:
            out = _try_message(node.smtp_port, "shop",
                               [f"r{i}-{j}@dest.test" for j in range(3)], f"<race{i}@shop.test>")
        except OSError:  # node B is down: refused, reset or cut mid-session
            return []
        finished["done"] += 1
        return out

    with ThreadPoolExecutor(5 + _THREADS) as pool:
        holders = [pool.submit(holder, i) for i in range(5)]
        holding.wait()
        racers = [pool.submit(racer, i) for i in range(40)]
        deadline = time.monotonic() + 30
        while finished["done"] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
        b.kill()  # SIGKILL: as a power cut looks to the process
        crashed.set()
        assert [h.result(timeout=60) for h in holders] == [3] * 5
        accepted = [r for f in racers for r in f.result(timeout=60)]
    b.start()  # same spool, same node id: it reconciles its own reservations

    queued = _queued(a) + _queued(b)
    # Every message a client saw accepted is queued; a message B wrote just before dying
    # may be queued without the client having seen its 250 (and is then charged too).
    assert set(accepted) <= set(queued)
    assert len(queued) == len(set(queued))
    # Charged exactly once: per recipient, reservations minus releases is 1 if queued,
    # else 0; and the held recipients' credits came back. (Checked before the totals, so
    # that a failure names the recipients.)
    net = Counter[str]()
    for e in _history(a, "shop"):
        if e["kind"] in ("reserve", "release"):
            net[e["recipient"]] -= e["delta"]
    assert {r for r, n in net.items() if n} == set(queued)
    assert set(net.values()) <= {0, 1}
    summary = _admin(b, "GET", "/api/v1/admin/tenants/shop/credits")
    assert summary["held"] == 0  # nothing left reserved: B released its dead sessions'
    assert summary["balance"] + len(queued) == credits  # no credit lost
    assert all(net[f"h{i}-{j}@dest.test"] == 0 for i in range(5) for j in range(3))
    assert sum(e["delta"] for e in _history(a, "shop")) == summary["balance"]


def test_a_node_whose_redis_is_down_does_not_start(tmp_path):
    # Fail fast: a node serving with private policy state would overspend the shared wallet.
    closed = f"redis://127.0.0.1:{free_port()}/0"
    node = MtaProcess(tmp_path, _tenants_toml() + f'\n[cluster]\nredis_url = "{closed}"\n')
    try:
        with pytest.raises(RuntimeError, match="mta exited"):
            node.start(timeout=20)
        # One line naming the key and the cause, no traceback.
        assert f"cannot start: [cluster] redis_url {closed}: Error 111 connecting" \
            in node.stderr
        assert "Traceback" not in node.stderr
    finally:
        node.kill()
