"""The embedded store decides in memory and writes policy.db behind (sqlite_store.py): what
that must never change. Unique-recipient limits stay exact when memory hands over to SQLite
near the limit; a write that fails undoes what it held and memory follows the disk."""

from __future__ import annotations

import asyncio
import random
import sqlite3

import pytest

from mta.policy import PolicyAdmin, PolicyEngine

from .conftest import BASE_TOML, Backend, send


async def accept(engine: PolicyEngine, rcpt: str, queue_id: str) -> None:
    """One message as ingress accepts it: durable (prepare) before its 250, then commit."""
    txn = engine.transaction("shop", "s@shop.example", queue_id)
    assert await engine.check_mail(txn) is None
    assert await engine.check_rcpt(txn, rcpt) is None
    assert await engine.check_data(txn, None) is None
    assert await engine.prepare(txn, queue_id) is None
    await engine.commit(txn, queue_id)


async def test_unique_limit_is_exact_when_sessions_race_with_repeated_recipients(
        make_engine):
    """30 sessions send to overlapping recipients of a pool of 25 under a limit of 10
    unique recipients a month: exactly 10 distinct ones get through, every repeat of those
    is accepted, and nothing else is."""
    engine: PolicyEngine = await make_engine('[tenants.ten]\nunique_recipients_per_month = 10\n')
    pool = [f"p{i}@x.example" for i in range(25)]
    rnd = random.Random(7)
    picks = [rnd.sample(pool, 3) for _ in range(30)]
    results = await asyncio.wait_for(
        asyncio.gather(*(send(engine, "ten", rcpts) for rcpts in picks)), 30)
    accepted = {r for rcpts, out in zip(picks, results, strict=True)
                for r, o in zip(rcpts, out, strict=True) if o == "ok"}
    refused = {r for rcpts, out in zip(picks, results, strict=True)
               for r, o in zip(rcpts, out, strict=True) if o != "ok"}
    assert len(accepted) == 10
    assert not accepted & refused  # a counted recipient is never refused
    usage = {u.name: u.used for u in await PolicyAdmin(engine).usage("ten")}
    assert usage["unique_recipients_per_month"] == 10
    # The month is full for new recipients, open for the counted ones.
    newcomer = next(r for r in pool if r not in accepted)
    out = await send(engine, "ten", [newcomer, *sorted(accepted)[:2]])
    assert out[0].startswith("451 4.7.1 Monthly unique-recipient limit of 10 reached")
    assert out[1:] == ["ok", "ok"]


async def test_a_failed_write_refuses_the_message_and_memory_follows_the_disk(
        make_engine, tmp_path, backend: Backend):
    """policy.db fills up (SQLITE_FULL) under reservations already answered: prepare()
    refuses those messages (451, so the client retries), nothing they reserved stays
    charged, memory is read back from policy.db, and the balance stays exact."""
    if backend.name != "sqlite":
        pytest.skip("a SQLite write failure")
    state = tmp_path / "state"
    engine: PolicyEngine = await make_engine(state=state)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 100, paid=True)
    await accept(engine, "a@x.example", "01b1000000000000aa")
    store = engine.store
    loop = asyncio.get_running_loop()

    def cap(pages: int | None) -> None:  # on the database thread, in order with writes
        c = store._conn  # type: ignore[attr-defined]
        if pages is None:
            c.execute("PRAGMA max_page_count=1073741823")
        else:
            c.execute(f"PRAGMA max_page_count={c.execute('PRAGMA page_count').fetchone()[0]}")
    await store._read(lambda c: cap(0))  # type: ignore[attr-defined]

    txns = []
    for n in range(20):  # enough new rows to need a new page
        txn = engine.transaction("shop", "s@shop.example", f"01b10000000000{n:04x}")
        assert await engine.check_mail(txn) is None
        assert await engine.check_rcpt(txn, f"r{n}-{'x' * 200}@x.example") is None
        txns.append(txn)
    replies = [await engine.prepare(txn, txn.id) for txn in txns]
    assert all(str(r).startswith("451 4.3.0") for r in replies), replies
    for txn in txns:
        await engine.abort(txn)
    await loop.run_in_executor(store._exec, cap, None)  # type: ignore[attr-defined]
    # a's credit stays taken (its message was accepted); its commit, after the 250, was in
    # the failed write, so it is settled at the next start, like after a crash.
    assert (await admin.credits("shop")).balance == 99
    await accept(engine, "b@x.example", "01b1000000000000bb")
    assert (await admin.credits("shop")).balance == 98
    await engine.aclose()

    engine = await make_engine(state=state)
    spool = {"01b1000000000000aa", "01b1000000000000bb"}
    assert await engine.reconcile(lambda msg_id: msg_id in spool) == (1, 0)
    summary = await PolicyAdmin(engine).credits("shop")
    assert (summary.balance, summary.held) == (98, 0)
    await engine.aclose()  # policy.db itself says the same
    with sqlite3.connect(state / "policy.db") as other:
        assert other.execute("SELECT sum(remaining) FROM lots").fetchone()[0] == 98
        assert other.execute("SELECT count(*) FROM reservations").fetchone()[0] == 0


async def test_a_refund_whose_write_fails_is_not_reported_done(make_engine, backend: Backend):
    """Under charge = "delivered", a bounce refunds the held credit once written. If that
    write fails, the caller hears it, and the credit is still held for the next try."""
    if backend.name != "sqlite":
        pytest.skip("a SQLite write failure")
    base = BASE_TOML.replace("[policy]\n", '[policy]\ncharge = "delivered"\n')
    engine: PolicyEngine = await make_engine(base=base)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 5, paid=True)
    await accept(engine, "a@x.example", "01b2000000000000aa")
    assert ((await admin.credits("shop")).balance, (await admin.credits("shop")).held) == (4, 1)
    store = engine.store
    # The refund's ledger row fails to be written, as on a disk error.
    await store._call(lambda c: c.execute(  # type: ignore[attr-defined]
        "CREATE TRIGGER fail_refund BEFORE INSERT ON ledger WHEN NEW.kind = 'refund' "
        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
    with pytest.raises(sqlite3.IntegrityError, match="disk I/O error"):
        await engine.on_outcome("shop", "01b2000000000000aa", "a@x.example", "bounced")
    await store._call(lambda c: c.execute(  # type: ignore[attr-defined]
        "DROP TRIGGER fail_refund"))
    assert ((await admin.credits("shop")).balance, (await admin.credits("shop")).held) == (4, 1)
    await engine.on_outcome("shop", "01b2000000000000aa", "a@x.example", "bounced")
    assert ((await admin.credits("shop")).balance, (await admin.credits("shop")).held) == (5, 0)
