"""The durable spool, against real SQLite files in a temporary directory."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mta.queue.envelope import Envelope, Recipient
from mta.queue.records import Outcome, SpoolError, SpoolFullError
from mta.queue.schema import SCHEMA_VERSION
from mta.queue.spool import Spool
from mta.rfc5321.reply import Reply

BODY = b"Subject: test\r\n\r\n" + b"x" * 1000 + b"\r\n"


def envelope(n_rcpt: int = 2, tenant: str = "acme") -> Envelope:
    return Envelope(
        tenant=tenant, mail_from="sender@example.org",
        recipients=[Recipient(f"user{i}@example.com", notify="FAILURE,DELAY" if i else None,
                              orcpt=f"rfc822;user{i}@example.com" if i else None)
                    for i in range(n_rcpt)],
        client_ip="127.0.0.1", helo="client.example.org", auth_user="acme-app",
        mail_params={"BODY": "8BITMIME", "ENVID": "abc"}, received_at=1_700_000_000.0)


@pytest.fixture
async def spool(tmp_path: Path):
    s = await Spool.open(tmp_path / "spool")
    yield s
    await s.close()


async def pending_keys(spool: Spool, batch: int = 1000) -> list[tuple[str, int]]:
    out = []
    async for rows in spool.iter_pending(batch=batch):
        out.extend((r.msg_id, r.index) for r in rows)
    return out


# --- put and read back -------------------------------------------------------------------

async def test_put_stores_envelope_recipients_and_body(spool: Spool) -> None:
    msg_id = await spool.put(envelope(), BODY)
    info = await spool.get(msg_id)
    assert info is not None
    assert (info.tenant, info.mail_from, info.state, info.size) == (
        "acme", "sender@example.org", "queued", len(BODY))
    assert info.mail_params == {"BODY": "8BITMIME", "ENVID": "abc"}
    assert (info.client_ip, info.helo, info.auth_user) == (
        "127.0.0.1", "client.example.org", "acme-app")
    assert info.received_at == 1_700_000_000.0
    assert [(r.index, r.address, r.notify, r.orcpt, r.state, r.attempts)
            for r in info.recipients] == [
        (0, "user0@example.com", None, None, "queued", 0),
        (1, "user1@example.com", "FAILURE,DELAY", "rfc822;user1@example.com", "queued", 0)]
    assert await spool.read_body(msg_id) == BODY


async def test_unknown_ids_are_none_or_keyerror(spool: Spool) -> None:
    assert await spool.get("0" * 18) is None
    assert await spool.get("../etc/passwd") is None
    with pytest.raises(KeyError):
        await spool.read_body("0" * 18)


async def test_get_with_body_reads_a_queued_message_and_its_body_in_one_call(
        spool: Spool) -> None:
    msg_id = await spool.put(envelope(), BODY)
    info, body = await spool.get_with_body(msg_id)
    assert info == await spool.get(msg_id)
    assert body == BODY
    assert await spool.get_with_body("0" * 18) == (None, None)
    assert await spool.get_with_body("../etc/passwd") == (None, None)
    # Held, or done (its body dropped): the message, and no body to deliver.
    assert await spool.hold(msg_id)
    info, body = await spool.get_with_body(msg_id)
    assert (info.state, body) == ("held", None)
    assert await spool.release(msg_id)
    await spool.record([Outcome(msg_id, i, "delivered", Reply(250, "2.0.0", "Ok"))
                        for i in range(2)])
    info, body = await spool.get_with_body(msg_id)
    assert (info.state, body) == ("done", None)


async def test_reads_asked_together_each_get_their_own_message(spool: Spool) -> None:
    bodies = {await spool.put(envelope(1), BODY + str(i).encode()): BODY + str(i).encode()
              for i in range(40)}
    ids = [*bodies, "0" * 18]  # and one unknown id among them
    got = await asyncio.gather(*(spool.get_with_body(m) for m in ids))
    for msg_id, (info, body) in zip(ids, got, strict=True):
        if msg_id in bodies:
            assert (info.id, body) == (msg_id, bodies[msg_id])
        else:
            assert (info, body) == (None, None)
    # A read asked while others are out is answered too (by the next trip).
    first = asyncio.ensure_future(spool.get_with_body(ids[0]))
    await asyncio.sleep(0)
    second = await spool.get_with_body(ids[1])
    assert (await first)[1] == bodies[ids[0]] and second[1] == bodies[ids[1]]


async def test_put_without_recipients_is_a_caller_bug(spool: Spool) -> None:
    with pytest.raises(ValueError):
        await spool.put(envelope(0), BODY)


# --- group commit ------------------------------------------------------------------------

async def test_concurrent_puts_share_commits(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path, max_batch=64) as spool:
        ids = await asyncio.wait_for(
            asyncio.gather(*(spool.put(envelope(1), BODY) for _ in range(200))), timeout=30)
        assert len(set(ids)) == 200
        assert spool.committed_ops == 200
        # 200 puts arriving together: the first commits alone, the rest in batches <= 64.
        assert 4 <= spool.commits < 200


async def test_an_idle_put_commits_at_once(spool: Spool) -> None:
    await asyncio.wait_for(spool.put(envelope(1), BODY), timeout=5)
    assert spool.commits == 1


async def test_an_idle_put_waits_commit_wait_for_others_to_share_its_commit(
        tmp_path: Path) -> None:
    # [spool] commit_wait: a put that finds the writer idle is not committed at once; one
    # that arrives within the wait goes in the same commit. Without the wait the first
    # commit (an fsync) is over long before the second put comes 50 ms later.
    for wait, commits in ((0.5, 1), (0.0, 2)):
        async with await Spool.open(tmp_path / str(wait), commit_wait=wait) as spool:
            first = asyncio.ensure_future(spool.put(envelope(1), BODY))
            await asyncio.sleep(0.05)
            await asyncio.wait_for(asyncio.gather(first, spool.put(envelope(1), BODY)),
                                   timeout=10)
            assert (spool.commits, spool.committed_ops) == (commits, 2), wait


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    spool = await Spool.open(tmp_path)
    puts = [asyncio.create_task(spool.put(envelope(1), BODY)) for _ in range(20)]
    await asyncio.sleep(0)
    await spool.close()
    ids = await asyncio.gather(*puts)
    async with await Spool.open(tmp_path) as again:
        assert all([await again.get(i) for i in ids])
    with pytest.raises(SpoolError):
        await spool.put(envelope(1), BODY)


# --- reopen, schema, shards --------------------------------------------------------------

async def test_reopen_keeps_everything_and_ids_keep_increasing(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path) as spool:
        first = [await spool.put(envelope(), BODY) for _ in range(3)]
    async with await Spool.open(tmp_path) as spool:
        assert [m.id for m in await spool.list()] == first
        later = await spool.put(envelope(), BODY)
        assert later > max(first)
    db = sqlite3.connect(tmp_path / "spool-00.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        db.close()


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path):
        pass
    db = sqlite3.connect(tmp_path / "spool-00.sqlite")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(SpoolError, match="newer than this mta"):
        await Spool.open(tmp_path)


async def test_a_shard_opens_in_one_process_only(tmp_path: Path) -> None:
    async with await Spool.open(tmp_path, shard=0):
        with pytest.raises(SpoolError, match="another process"):
            await Spool.open(tmp_path, shard=0)
        async with await Spool.open(tmp_path, shard=1) as other:  # another worker
            assert (await other.put(envelope(1), BODY)).endswith("01")


# --- delivery outcomes -------------------------------------------------------------------

async def test_record_deferred_keeps_the_recipient_queued_with_its_retry(
        spool: Spool) -> None:
    msg_id = await spool.put(envelope(1), BODY)
    reply = Reply.parse("451-4.7.1 Try again later\n451 4.7.1 Greylisted")
    await spool.record([Outcome(msg_id, 0, "deferred", reply, next_attempt=2e9,
                                site="mx.example.com")])
    (r,) = (await spool.get(msg_id)).recipients
    assert (r.state, r.attempts, r.next_attempt, r.site) == (
        "queued", 1, 2e9, "mx.example.com")
    assert r.last_reply == reply
    assert await pending_keys(spool) == [(msg_id, 0)]


async def test_a_delivered_recipient_is_never_handed_out_again(spool: Spool) -> None:
    msg_id = await spool.put(envelope(2), BODY)
    await spool.record([Outcome(msg_id, 0, "delivered", Reply(250, "2.0.0", "Ok"))])
    assert await pending_keys(spool) == [(msg_id, 1)]
    # A late deferral (from a retry that raced) must not bring it back.
    await spool.record([Outcome(msg_id, 0, "deferred", Reply(421, "4.4.2", "timeout"),
                                next_attempt=1.0)])
    r0 = (await spool.get(msg_id)).recipients[0]
    assert (r0.state, r0.attempts, r0.last_reply) == (
        "delivered", 1, Reply(250, "2.0.0", "Ok"))
    assert await pending_keys(spool) == [(msg_id, 1)]


async def test_when_every_recipient_is_final_the_message_is_done_and_its_body_dropped(
        spool: Spool) -> None:
    msg_id = await spool.put(envelope(3), BODY)
    await spool.record([
        Outcome(msg_id, 0, "delivered", Reply(250, "2.0.0", "Ok")),
        Outcome(msg_id, 1, "bounced", Reply(550, "5.1.1", "No such user")),
    ])
    assert (await spool.get(msg_id)).state == "queued"
    await spool.record([Outcome(msg_id, 2, "expired", attempted=False)])
    info = await spool.get(msg_id)
    assert info.state == "done"
    assert [(r.state, r.attempts) for r in info.recipients] == [
        ("delivered", 1), ("bounced", 1), ("expired", 0)]
    with pytest.raises(KeyError):
        await spool.read_body(msg_id)
    assert await pending_keys(spool) == []


async def test_purge_removes_old_done_messages_only(spool: Spool) -> None:
    done = await spool.put(envelope(1), BODY)
    live = await spool.put(envelope(1), BODY)
    await spool.record([Outcome(done, 0, "delivered", Reply(250, "2.0.0", "Ok"))])
    assert await spool.purge(accepted_before=1.0) == 0  # both accepted after 1970
    assert await spool.purge(accepted_before=4e9) == 1
    assert await spool.get(done) is None and await spool.get(live) is not None


async def test_record_rejects_unknown_states(spool: Spool) -> None:
    with pytest.raises(ValueError):
        await spool.record([Outcome("0" * 18, 0, "lost")])  # type: ignore[arg-type]


# --- admin operations --------------------------------------------------------------------

async def test_hold_stops_delivery_and_release_resumes_it(spool: Spool) -> None:
    msg_id = await spool.put(envelope(2), BODY)
    assert await spool.hold(msg_id) is True
    assert await spool.hold(msg_id) is False  # already held
    info = await spool.get(msg_id)
    assert info.state == "held" and {r.state for r in info.recipients} == {"held"}
    assert await pending_keys(spool) == []
    assert await spool.release(msg_id) is True
    assert await spool.release(msg_id) is False
    assert await pending_keys(spool) == [(msg_id, 0), (msg_id, 1)]


async def test_an_outcome_for_a_held_recipient_still_counts(spool: Spool) -> None:
    msg_id = await spool.put(envelope(1), BODY)
    await spool.hold(msg_id)  # while a delivery was in flight
    await spool.record([Outcome(msg_id, 0, "delivered", Reply(250, "2.0.0", "Ok"))])
    assert (await spool.get(msg_id)).state == "done"


async def test_delete_removes_message_body_and_recipients(spool: Spool) -> None:
    msg_id = await spool.put(envelope(2), BODY)
    assert await spool.delete(msg_id) is True
    assert await spool.delete(msg_id) is False
    assert await spool.get(msg_id) is None
    assert await pending_keys(spool) == []


async def test_list_pages_in_acceptance_order_and_filters_by_state(spool: Spool) -> None:
    ids = [await spool.put(envelope(1), BODY) for _ in range(7)]
    await spool.hold(ids[2])
    page1 = await spool.list(limit=3)
    page2 = await spool.list(limit=3, after=page1[-1].id)
    page3 = await spool.list(limit=3, after=page2[-1].id)
    assert [m.id for m in page1 + page2 + page3] == ids
    assert all(len(m.recipients) == 1 for m in page1)
    assert [m.id for m in await spool.list(state="held")] == [ids[2]]
    with pytest.raises(ValueError):
        await spool.list(state="bogus")


async def test_list_filters_by_tenant_and_site_in_the_spool(spool: Spool) -> None:
    """Every page of a filtered list is full: the spool filters, not the caller."""
    ids = [await spool.put(envelope(2, tenant="globex" if i % 3 else "acme"), BODY)
           for i in range(9)]
    for i, msg_id in enumerate(ids):
        site = "gmail" if i % 2 else "yahoo"
        await spool.record([Outcome(msg_id, 0, "deferred", Reply(421, "4.4.2", "x"), 2e9, site)])
    acme = [m.id for m in await spool.list(tenant="acme")]
    assert acme == [ids[0], ids[3], ids[6]]
    gmail = await spool.list(site="gmail", limit=2)
    gmail += await spool.list(site="gmail", limit=2, after=gmail[-1].id)
    assert [m.id for m in gmail] == [ids[1], ids[3], ids[5], ids[7]]
    assert [m.id for m in await spool.list(site="gmail", tenant="acme")] == [ids[3]]
    # Recipient 1 of each was never routed: "" finds them all.
    assert len(await spool.list(site="")) == 9
    assert await spool.list(site="hotmail") == []


async def test_stats_count_messages_recipients_and_sites(spool: Spool) -> None:
    a = await spool.put(envelope(2), BODY)
    b = await spool.put(envelope(1), BODY)
    await spool.record([Outcome(a, 0, "deferred", Reply(421, "4.4.2", "x"), 2e9, "gmail"),
                        Outcome(a, 1, "delivered", Reply(250, "2.0.0", "Ok"), site="gmail")])
    await spool.hold(b)
    assert await spool.stats() == {
        "messages": {"queued": 1, "held": 1},
        "recipients": {"queued": 1, "held": 1, "delivered": 1},
        "sites": {"gmail": 1},
    }


async def test_shape_counts_recipients_by_site_age_and_held(spool: Spool) -> None:
    """qshape's counts in one query: what the console's Queue table and GET
    /api/v1/admin/queue-shape show, exact whatever the queue holds."""
    a = await spool.put(envelope(3), BODY)  # received 1_700_000_000
    b = await spool.put(envelope(1, tenant="globex"), BODY)
    c = await spool.put(envelope(2), BODY)
    await spool.record([Outcome(a, 0, "deferred", Reply(421, "4.4.2", "x"), 2e9, "gmail"),
                        Outcome(a, 1, "deferred", Reply(421, "4.4.2", "x"), 2e9, "gmail"),
                        Outcome(a, 2, "delivered", Reply(250, "2.0.0", "Ok"), site="gmail"),
                        Outcome(b, 0, "deferred", Reply(421, "4.4.2", "x"), 2e9, "yahoo")])
    await spool.hold(c)
    now = 1_700_000_000.0 + 7 * 60  # 7 minutes on: the second bucket of 5, 10, 20
    got = sorted(await spool.shape([5, 10, 20], now))
    assert got == [("", True, 1, 2), ("gmail", False, 1, 2), ("yahoo", False, 1, 1)]
    assert sorted(await spool.shape([5, 10, 20], now, tenant="globex")) == [
        ("yahoo", False, 1, 1)]
    # Older than the last edge: the overflow bucket.
    assert ("gmail", False, 3, 2) in await spool.shape([5, 10, 20], now + 3600)


# --- recovery streaming ------------------------------------------------------------------

async def test_iter_pending_streams_in_bounded_batches(spool: Spool) -> None:
    ids = await asyncio.gather(*(spool.put(envelope(3), BODY) for _ in range(40)))
    sizes = []
    seen = []
    async for rows in spool.iter_pending(batch=25):
        sizes.append(len(rows))
        seen.extend((r.msg_id, r.index) for r in rows)
        assert all(r.tenant == "acme" and r.domain == "example.com" for r in rows)
    assert max(sizes) == 25 and sum(sizes) == 120
    assert seen == sorted((i, n) for i in ids for n in range(3))


# --- failures ----------------------------------------------------------------------------

async def test_a_full_spool_fails_the_batch_with_452_and_recovers(tmp_path: Path) -> None:
    big = b"y" * 60_000
    async with await Spool.open(tmp_path, max_size=1024 * 1024) as spool:
        stored: list[str] = []
        with pytest.raises(SpoolFullError) as excinfo:
            for _ in range(100):  # bounded: 100 * 60 KB is far past the 1 MiB cap
                stored.append(await spool.put(envelope(1), big))
        assert excinfo.value.reply == Reply(452, "4.3.1", excinfo.value.reply.text)
        # A batch of concurrent puts fails together, and nothing is half-written.
        results = await asyncio.gather(*(spool.put(envelope(1), big) for _ in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(r, SpoolFullError) for r in results)
        assert [m.id for m in await spool.list(limit=1000)] == stored
        for msg_id in stored:
            assert await spool.read_body(msg_id) == big
        # The cause goes away (mail delivered and purged): puts work again.
        for msg_id in stored[:5]:
            assert await spool.delete(msg_id)
        assert await spool.put(envelope(1), big)


async def test_a_locked_database_fails_the_batch_with_451_and_recovers(
        tmp_path: Path) -> None:
    async with await Spool.open(tmp_path, busy_timeout=0.05) as spool:
        before = await spool.put(envelope(1), BODY)
        intruder = sqlite3.connect(tmp_path / "spool-00.sqlite", isolation_level=None)
        try:
            intruder.execute("BEGIN IMMEDIATE")  # e.g. an operator's sqlite3 shell
            with pytest.raises(SpoolError) as excinfo:
                await asyncio.wait_for(spool.put(envelope(1), BODY), timeout=10)
            assert not isinstance(excinfo.value, SpoolFullError)
            assert (excinfo.value.reply.code, excinfo.value.reply.enhanced) == (451, "4.3.0")
        finally:
            intruder.execute("ROLLBACK")
            intruder.close()
        after = await spool.put(envelope(1), BODY)
        assert [m.id for m in await spool.list()] == [before, after]


@pytest.fixture
def tiny_fs(tmp_path: Path):
    """A real 2 MiB filesystem (tmpfs), so the disk really fills up. Needs root."""
    import subprocess

    mnt = tmp_path / "tinyfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                          capture_output=True, timeout=10, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=10,
                       check=False)


async def test_a_full_disk_fails_puts_with_452_and_they_work_once_space_is_freed(
        tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024))  # other files eat half the disk
    big = b"z" * 50_000
    async with await Spool.open(tiny_fs / "spool") as spool:
        stored: list[str] = []
        with pytest.raises(SpoolFullError) as excinfo:
            for _ in range(100):  # bounded: 100 * 50 KB is far past 2 MiB
                stored.append(await spool.put(envelope(1), big))
        assert (excinfo.value.reply.code, excinfo.value.reply.enhanced) == (452, "4.3.1")
        assert stored  # some went in before the disk filled
        assert [m.id for m in await spool.list(limit=1000)] == stored
        filler.unlink()  # the operator frees space
        later = await asyncio.wait_for(spool.put(envelope(1), big), timeout=10)
    async with await Spool.open(tiny_fs / "spool") as spool:
        assert [m.id for m in await spool.list(limit=1000)] == [*stored, later]
        for msg_id in stored:
            assert await spool.read_body(msg_id) == big


async def test_a_put_is_visible_to_get_at_once(tmp_path):
    """Under concurrent reads, a message whose put() returned must be found by get() at
    once: the delivery side looks it up right after acceptance. (Reads that kept a cursor
    open across awaits pinned SQLite's WAL snapshot and hid new messages.)"""
    import asyncio

    from mta.queue import Envelope, Recipient, Spool

    spool = await Spool.open(tmp_path)
    ids: list[str] = []
    missing = 0
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            await asyncio.sleep(0)
            for msg_id in ids[-20:]:
                await spool.get(msg_id)

    async def writer() -> None:
        nonlocal missing
        for _ in range(15):
            msg_id = await spool.put(Envelope("t", "a@b.test", [Recipient("c@d.test")]),
                                     b"x" * 500)
            ids.append(msg_id)
            if await spool.get(msg_id) is None:
                missing += 1

    readers = [asyncio.create_task(reader()) for _ in range(10)]
    await asyncio.gather(*(writer() for _ in range(8)))
    stop.set()
    await asyncio.gather(*readers)
    await spool.close()
    assert missing == 0


async def test_the_first_read_after_a_put_comes_from_memory_until_a_write_changes_it(
        spool: Spool, monkeypatch) -> None:
    import mta.queue.spool as spool_mod

    on_disk = spool._deliveries.get
    trips: list[str] = []

    async def counted(msg_id: str):
        trips.append(msg_id)
        return await on_disk(msg_id)

    monkeypatch.setattr(spool._deliveries, "get", counted)
    a = await spool.put(envelope(), BODY)
    info, body = await spool.get_with_body(a)  # delivery, straight after acceptance
    assert trips == [] and body == BODY
    assert info == await spool.get(a)  # exactly what the database holds
    assert (await spool.get_with_body(a))[1] == BODY and trips == [a]  # once only
    # A write before the first read drops the copy: the read sees the database.
    b = await spool.put(envelope(), BODY)
    assert await spool.hold(b)
    assert (await spool.get_with_body(b))[0].state == "held" and trips[-1] == b
    c = await spool.put(envelope(), BODY)
    assert await spool.delete(c)
    assert await spool.get_with_body(c) == (None, None)
    d = await spool.put(envelope(1), BODY)
    await spool.record([Outcome(d, 0, "delivered", Reply(250, "2.0.0", "Ok"))])
    assert (await spool.get_with_body(d))[0].state == "done"
    e = await spool.put(envelope(1), BODY)
    await spool.transact(lambda db: db.execute("UPDATE messages SET state='held' WHERE id=?",
                                               (e,)))
    assert (await spool.get_with_body(e))[0].state == "held"
    # Held at acceptance, or past the memory bound: nothing kept.
    f = await spool.put(envelope(1), BODY, held=Reply(450, "4.7.1", "review"))
    assert (await spool.get_with_body(f))[0].state == "held" and trips[-1] == f
    monkeypatch.setattr(spool_mod, "FRESH_BYTES", len(BODY) - 1)
    g = await spool.put(envelope(1), BODY)
    assert (await spool.get_with_body(g))[1] == BODY and trips[-1] == g
