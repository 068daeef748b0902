"""The parts of an erasure on their own, on real files: the address matcher, the events
files (plain and gzip) rewritten through the events log's lock, hashed suppression entries
refusing an erased address on a real policy.db and on a real Redis, the erasure key."""

from __future__ import annotations

import gzip
import json
import os

import pytest
import redis.asyncio as aioredis

from mta.config import Config
from mta.config.suppression import SuppressionConfig
from mta.gdpr import ErasureKey, Matcher
from mta.gdpr.events import erase_events, find_events
from mta.gdpr.suppressions import erase_suppressions, find_suppressions
from mta.observe.events import EventLog
from mta.policy.clock import ManualClock
from mta.policy.sqlite_store import SqliteStore
from mta.suppress import GLOBAL, Suppressions
from mta.suppress.redis import RedisBackend

T0 = 1_800_000_000.0
A = "Jo.Erase@dest.test"


def test_the_matcher_finds_the_whole_address_in_any_case_and_nothing_longer():
    m = Matcher(f"<{A}>")
    assert m.address == "jo.erase@dest.test"
    assert m.in_text("To: JO.ERASE@DEST.TEST") and m.in_bytes(b'"jo.erase@dest.test"')
    assert m.in_text("rfc822;jo.erase@dest.test")
    for other in ("xjo.erase@dest.test", "jo.erase@dest.test.example", "a.jo.erase@dest.test",
                  "jo.erase@dest.tests"):
        assert not m.in_text(other), other
    assert m.in_text("<jo.erase@dest.test>.")  # end of a sentence
    assert m.sub_text("a jo.erase@dest.test b", "x@y") == "a x@y b"


def test_the_key_is_made_once_and_hashes_case_blind(tmp_path):
    path = tmp_path / "gdpr.key"
    assert ErasureKey.load(path) is None
    k = ErasureKey.load_or_create(path)
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert ErasureKey.load_or_create(path).token(A) == k.token(A.upper()) == k.token(f"<{A}>")
    assert k.token(A).startswith("hmac:") and "erase" not in k.token(A)
    assert ErasureKey(b"another secret 1234").token(A) != k.token(A)


def test_events_files_are_rewritten_through_the_log_lock(tmp_path):
    path = tmp_path / "events.jsonl"
    lines = [{"event": "received", "id": "m1", "recipient": A.lower(), "mail_from": "s@x.test"},
             {"event": "received", "id": "m2", "recipient": "other@dest.test",
              "mail_from": A},
             {"event": "delivered", "id": "m3", "recipient": "other@dest.test"}]
    text = "".join(json.dumps(x) + "\n" for x in lines)
    (tmp_path / "events.jsonl-20260101T000000.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "events.jsonl-20260102T000000").write_text(text)
    log = EventLog(path)
    log.emit("deferred", id="m4", recipient=A)  # buffered, not yet written
    m = Matcher(A)
    found = log.edit(lambda p: find_events(p, m))
    assert [e["id"] for e in found] == ["m1", "m2", "m1", "m2", "m4"]
    assert found[0]["file"].endswith(".gz")
    out = log.edit(lambda p: erase_events(p, m, "erased-1@erased.invalid"))
    assert out == {"files_rewritten": 3, "lines_removed": 3, "lines_redacted": 2}
    log.emit("delivered", id="m5", recipient="late@dest.test")  # the file was reopened
    log._write()
    gz = json.loads(gzip.decompress(
        (tmp_path / "events.jsonl-20260101T000000.gz").read_bytes()).splitlines()[0])
    assert gz == {**lines[1], "mail_from": "erased-1@erased.invalid"}
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["m5"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "events.jsonl", "events.jsonl-20260101T000000.gz", "events.jsonl-20260102T000000"]
    assert find_events(path, m) == []


async def _check_erasure(lists: Suppressions, key: ErasureKey) -> None:
    await lists.add(lists.entry("shop", A, "complaint"))
    await lists.add(lists.entry(GLOBAL, "kept@dest.test", "manual"))
    assert [e["scope"] for e in await find_suppressions(lists, A.lower())] == ["shop"]
    out = await erase_suppressions(lists, A.lower(), key.token(A))
    assert out == {"entries_hashed": 1, "entries_added": 0}
    assert await find_suppressions(lists, A.lower()) == []
    assert await lists.check(["shop", GLOBAL], A) is None  # without the hasher: unknown
    lists.hasher = key.token
    hit = await lists.check(["shop", GLOBAL], A.upper())
    assert (hit.scope, hit.reason, hit.address) == ("shop", "complaint", key.token(A))
    assert await lists.check(["other", GLOBAL], A) is None  # still only the tenant's list
    assert (await lists.check([GLOBAL], "kept@dest.test")).address == "kept@dest.test"
    # An address on no list gets a global entry.
    await erase_suppressions(lists, "new@dest.test", key.token("new@dest.test"))
    assert (await lists.check(["any", GLOBAL], "new@dest.test")).scope == GLOBAL
    # An operator may take a hashed entry off (`mta suppress remove hmac:...`).
    assert await lists.remove(GLOBAL, key.token("new@dest.test"))
    assert await lists.check(["any", GLOBAL], "new@dest.test") is None


async def test_hashed_entries_refuse_an_erased_address_on_policy_db(tmp_path):
    store = await SqliteStore.open(tmp_path / "policy.db")
    lists = await Suppressions.open(Config(), tmp_path, clock=ManualClock(T0))
    try:
        await _check_erasure(lists, ErasureKey.load_or_create(tmp_path / "gdpr.key"))
        # RCPT's filter learnt the hash too (a restart fills it from policy.db).
        assert lists._bloom is not None and lists.hasher is not None
        assert lists.hasher(A) in lists._bloom
    finally:
        await lists.aclose()
        await store.aclose()


async def test_hashed_entries_refuse_an_erased_address_on_redis(redis_url, tmp_path):
    client = aioredis.from_url(redis_url.rsplit("/", 1)[0] + "/15", decode_responses=True)
    await client.flushdb()
    lists = Suppressions(RedisBackend(client), SuppressionConfig(), ManualClock(T0))
    try:
        await _check_erasure(lists, ErasureKey.load_or_create(tmp_path / "gdpr.key"))
        keys = await client.keys("*")
        assert not [k for k in keys if "erase" in k.lower()]
        for k in keys:
            if await client.type(k) == "hash":
                assert not [f for f in await client.hkeys(k) if "erase" in f.lower()]
            if await client.type(k) == "stream":  # the additions log nodes follow
                assert not [i for i, f in await client.xrange(k)
                            if "erase" in f.get("a", "").lower()]
        assert "stream" in [await client.type(k) for k in keys]
    finally:
        await client.flushdb()
        await lists.aclose()


async def test_policy_db_keeps_counts_and_amounts_with_the_hash_in_place(tmp_path):
    import sqlite3

    from mta.gdpr.policy import erase_policy, find_in_policy

    path = tmp_path / "policy.db"
    store = await SqliteStore.open(path)
    a, token = A.lower(), ErasureKey(b"k" * 32).token(A)

    def seed(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO uniq VALUES ('shop', '2026-12', ?, 2)", (a,))
        c.execute("INSERT INTO uniq VALUES ('shop', '2026-12', 'b@dest.test', 1)")
        c.execute("INSERT INTO ledger(time, tenant, lot, delta, kind, msg_id, recipient) "
                  "VALUES (1, 'shop', 1, -1, 'spend', 'q1', ?)", (a,))
    try:
        await store.write(seed)
        found = await store.write(find_in_policy, a)
        assert found["unique_recipients"] == [{"tenant": "shop", "month": "2026-12",
                                               "refs": 2}]
        assert [r["delta"] for r in found["ledger"]] == [-1]
        n = await store.write(erase_policy, a, token)
        assert (n["unique_recipients"], n["ledger"]) == (1, 1)
        await store.scrub()
        assert await store.write(find_in_policy, a) == {
            "unique_recipients": [], "reservations": [], "ledger": [], "dedupe": [],
            "suppression_strikes": []}
        rows = await store.write(lambda c: c.execute(
            "SELECT rcpt, refs FROM uniq ORDER BY rcpt").fetchall())
        assert [tuple(r) for r in rows] == [("b@dest.test", 1), (token, 2)]
        # The ledger is append-only again.
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await store.write(lambda c: c.execute("UPDATE ledger SET delta = 5"))
    finally:
        await store.aclose()
    assert a.encode() not in b"".join(p.read_bytes() for p in tmp_path.iterdir()
                                      if p.is_file())


def test_a_zstd_rotated_file_is_rewritten_as_zstd(tmp_path):
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "events.jsonl"
    rotated = tmp_path / "events.jsonl-20260101T000000.zst"
    text = "".join(json.dumps({"event": "delivered", "id": f"m{i}", "recipient": r}) + "\n"
                   for i, r in enumerate([A, "other@dest.test", A.upper()]))
    rotated.write_bytes(zstandard.ZstdCompressor().compress(text.encode()))
    log = EventLog(path)
    m = Matcher(A)
    assert len(log.edit(lambda p: find_events(p, m))) == 2
    assert log.edit(lambda p: erase_events(p, m, "x@erased.invalid"))["lines_removed"] == 2
    left = zstandard.ZstdDecompressor().stream_reader(rotated.read_bytes()).read()
    assert [json.loads(x)["id"] for x in left.splitlines()] == ["m1"]
