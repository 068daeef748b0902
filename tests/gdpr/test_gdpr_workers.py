"""`mta gdpr export|erase` with `[server] workers = 2` on a real Redis: worker 0's admin API
asks the other worker too, so messages and events on both shards are listed, and erased
from both (a byte search of the spool directory and both events files finds nothing, and
neither does one of every Redis key and value: unique recipients and the credit ledger
keep their counts under the hash), and both workers refuse the address afterwards by its
hash."""

from __future__ import annotations

import asyncio
import json
import smtplib

import redis

from tests.gdpr.test_gdpr import _hits
from tests.workers.test_workers import _post_credits

ADDRESS = "Wqz.Twoshards@dest.test"


def _send_many(port: int, n: int) -> list[tuple[int, str]]:
    out = []
    for i in range(n):  # a new connection each: the kernel spreads them over the workers
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
            s.ehlo("client.test")
            s.mail("s@sender.test")
            code, text = s.rcpt(ADDRESS)
            if code != 250:
                out.append((code, text.decode()))
                continue
            code, text = s.data(f"To: {ADDRESS}\r\nSubject: {i}\r\n\r\nhi\r\n".encode())
            out.append((code, text.decode().rsplit(" ", 1)[-1]))
    return out


def _values(r: redis.Redis, key: bytes) -> list:
    kind = r.type(key)
    if kind == b"string":
        return [r.get(key)]
    if kind == b"hash":
        h = r.hgetall(key)
        return [*h.keys(), *h.values()]
    if kind == b"list":
        return r.lrange(key, 0, -1)
    if kind == b"set":
        return list(r.smembers(key))
    if kind == b"zset":
        return r.zrange(key, 0, -1)
    return []


def _redis_hits(url: str, needle: str) -> list[str]:
    """Every Redis key whose name or value holds `needle` (any case): a byte search of
    the shared store."""
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        return [key.decode() for key in r.scan_iter(count=1000)
                if any(needle.encode() in (v or b"").lower() for v in [key, *_values(r, key)])]


async def test_export_and_erase_reach_every_worker(mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/15"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    # The relayed tenant on the free plan (unique recipients counted) and prepaid (a
    # ledger row per recipient): policy state that outlives the messages.
    mta = await asyncio.to_thread(mta_factory, f'[cluster]\nredis_url = "{url}"\n'
                                  '[tenants.default]\nplan = "free"\nprepaid = true\n')
    mta.kill()
    text = mta.config_path.read_text().replace("[server]\n", "[server]\nworkers = 2\n", 1)
    mta.config_path.write_text(text)
    await asyncio.to_thread(mta.start, notified=True)
    assert await asyncio.to_thread(_post_credits, mta, 100, "default") == 201
    sent = await asyncio.to_thread(_send_many, mta.smtp_port, 24)
    ids = [t for code, t in sent if code == 250]
    assert len(ids) == 24 and {i[-2:] for i in ids} == {"00", "01"}, sent
    out = await asyncio.to_thread(mta.cli, "suppress", "add", ADDRESS)
    assert out.returncode == 0, out.stderr

    out = await asyncio.to_thread(mta.cli, "gdpr", "export", ADDRESS)
    assert out.returncode == 0, out.stderr
    workers = json.loads(out.stdout)["workers"]
    assert [w["shard"] for w in workers] == [0, 1]
    listed = sorted(q["message"]["id"] for w in workers for q in w["queue"])
    assert listed == sorted(ids)
    assert all(any(e["event"] == "received" for e in w["events"]) for w in workers)
    assert (mta.workdir / "events-01.jsonl").exists()

    # The policy state in Redis names it too (the reservations of queued mail).
    assert _redis_hits(url, ADDRESS.lower())
    out = await asyncio.to_thread(mta.cli, "gdpr", "erase", ADDRESS, "--json")
    assert out.returncode == 0, out.stderr
    erased = json.loads(out.stdout)["workers"]
    assert sum(w["queue"]["messages_deleted"] for w in erased) == 24
    assert len({w["token"] for w in erased}) == 1  # one key for the daemon
    assert _hits(mta.workdir, [ADDRESS.encode(), b"wqz.twoshards"]) == []
    assert _redis_hits(url, ADDRESS.lower()) == []  # nor any key or value in Redis
    # Both workers refuse it (the connections spread over them), by its hash.
    refused = await asyncio.to_thread(_send_many, mta.smtp_port, 8)
    assert all(code == 550 and "suppressed" in t for code, t in refused), refused
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
