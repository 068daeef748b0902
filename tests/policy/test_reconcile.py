"""Crash safety: reservations are durable at RCPT; after a crash, reconciliation keeps those
whose message reached the spool and releases the rest. Nothing is charged twice or lost."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mta.policy import PolicyAdmin, PolicyEngine

from .conftest import BASE_TOML, Backend, EngineFactory, send

CRASHER = textwrap.dedent("""
    import asyncio, os, sys
    from pathlib import Path
    from mta.config import parse_config
    from mta.policy import ManualClock, PolicyAdmin, PolicyEngine

    async def main(state, now, toml, prefix):
        cfg = parse_config(Path(toml).read_text(), "test.toml", Path(state))
        eng = await PolicyEngine.open(cfg, state, clock=ManualClock(float(now)), owner="w1",
                                      redis_prefix=prefix)
        await PolicyAdmin(eng).add_credits("shop", 10, paid=True)

        async def rcpts(names):
            txn = eng.transaction("shop", "s@shop.example")
            assert await eng.check_mail(txn) is None
            for n in names:
                assert await eng.check_rcpt(txn, n + "@x.example") is None
            return txn

        a = await rcpts(["a1", "a2"])   # in the spool, crash before commit()
        await eng.prepare(a, "QA")
        b = await rcpts(["b1"])         # crash before the spool write
        c = await rcpts(["c1"])         # spool write started, never fsynced
        await eng.prepare(c, "QC")
        d = await rcpts(["d1"])         # fully accepted
        await eng.prepare(d, "QD")
        await eng.commit(d, "QD")
        print("reserved", flush=True)
        os._exit(137)                   # no cleanup at all: a crash

    asyncio.run(main(*sys.argv[1:]))
""")


async def run_crasher(state: Path, now: float, toml: Path, prefix: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CRASHER, str(state), str(now), str(toml), prefix,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 137, err.decode()
    assert out == b"reserved\n"


async def test_restart_reconciliation_after_a_real_crash(make_engine: EngineFactory,
                                                         tmp_path, clock, backend: Backend):
    state = tmp_path / "state"
    toml = tmp_path / "test.toml"
    toml.write_text(BASE_TOML + backend.toml())
    await run_crasher(state, clock.now(), toml, backend.prefix(state))

    engine = await make_engine(owner="w1", state=state)
    admin = PolicyAdmin(engine)
    # Reserved durably before the crash: 5 held, none spendable.
    assert (await admin.credits("shop")).balance == 5
    spool = {"QA", "QD"}
    kept, released = await engine.reconcile(lambda msg_id: msg_id in spool)
    # QD's commit() came after its 250 and need not be durable (SQLite leaves it in an
    # open transaction for a few ms; Redis applies it at once): if lost, reconcile keeps it.
    assert (kept, released) in ((1, 2), (2, 2))
    # QA (2) and QD (1) charged; b1 and c1 given back.
    s = await admin.credits("shop")
    assert (s.balance, s.held) == (7, 0)
    assert sum(e.delta for e in await admin.history("shop")) == 7
    assert [e.recipient for e in await admin.history("shop") if e.kind == "release"] == [
        "b1@x.example", "c1@x.example"]
    # Reconciling again (another restart) changes nothing: never charged twice.
    assert await engine.reconcile(lambda msg_id: True) == (0, 0)
    assert (await admin.credits("shop")).balance == 7


async def test_reconcile_only_touches_this_owners_reservations(make_engine, tmp_path,
                                                               backend: Backend):
    if backend.name != "redis":
        pytest.skip("one process per policy.db (see the test below)")
    state = tmp_path / "shared"
    w1 = await make_engine(owner="w1", state=state)
    w2 = await make_engine(owner="w2", state=state)
    await PolicyAdmin(w1).add_credits("shop", 5, paid=True)
    txn = w2.transaction("shop", "s@shop.example")  # w2 is mid-session, alive
    await w2.check_mail(txn)
    assert await w2.check_rcpt(txn, "a@x.example") is None
    assert await w1.reconcile(lambda m: False) == (0, 0)  # w1 restarted: leaves w2 alone
    await w2.commit(txn, "Q1")
    assert (await PolicyAdmin(w1).credits("shop")).balance == 4


async def test_async_message_exists_and_held_credit_under_charge_delivered(make_engine,
                                                                           tmp_path):
    base = BASE_TOML.replace("[policy]\n", '[policy]\ncharge = "delivered"\n')
    engine: PolicyEngine = await make_engine(base=base)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 3, paid=True)
    txn = engine.transaction("shop", "s@shop.example")
    await engine.check_mail(txn)
    await engine.check_rcpt(txn, "a@x.example")
    await engine.prepare(txn, "QZ")

    async def exists(msg_id: str) -> bool:
        await asyncio.sleep(0)
        return msg_id == "QZ"
    assert await engine.reconcile(exists) == (1, 0)
    assert (await admin.credits("shop")).held == 1
    await engine.on_outcome("shop", "QZ", "a@x.example", "bounced")
    assert ((await admin.credits("shop")).balance, (await admin.credits("shop")).held) == (3, 0)


SECOND_OPENER = textwrap.dedent("""
    import asyncio, sys
    from mta.policy.sqlite_store import SqliteStore

    async def main(path):
        try:
            store = await SqliteStore.open(path)
        except OSError as e:
            print(e)
            sys.exit(71)
        await store.aclose()
        print("opened")

    asyncio.run(main(sys.argv[1]))
""")


async def test_a_second_process_cannot_open_the_same_policy_db(make_engine, tmp_path,
                                                               backend: Backend):
    """The embedded store keeps counters and credits in memory: a second process writing
    the same policy.db would not see them, so it is refused with a clear error (workers and
    nodes share state through Redis)."""
    if backend.name != "sqlite":
        pytest.skip("Redis is made to be shared")
    state = tmp_path / "state"
    engine = await make_engine(state=state)

    async def second() -> tuple[int | None, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SECOND_OPENER, str(state / "policy.db"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode, (out + err).decode().strip()

    code, text = await second()
    assert code == 71, text
    assert text == (f"[Errno 16] {state / 'policy.db'} is in use by another mta process (one "
                    "process per policy.db; several workers or nodes share policy state "
                    "through [cluster] redis_url)")
    await engine.aclose()
    assert await second() == (0, "opened")


async def test_two_processes_sharing_redis_never_overspend(make_engine, tmp_path,
                                                           backend: Backend):
    # Two workers or nodes share one Redis (one Lua script per reservation).
    if backend.name != "redis":
        pytest.skip("one process per policy.db")
    state = tmp_path / "shared"
    engines = [await make_engine(owner=f"w{i}", state=state) for i in range(2)]
    await PolicyAdmin(engines[0]).add_credits("shop", 30, paid=True)

    async def client(i: int) -> list[str]:
        return await send(engines[i % 2], "shop", [f"r{i}-{j}@x.example" for j in range(3)])
    results = await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(20))), 30)
    assert [r for rs in results for r in rs].count("ok") == 30
    assert (await PolicyAdmin(engines[1]).credits("shop")).balance == 0


async def test_store_failure_defers_instead_of_raising(make_engine):
    # Postfix smtpd_check: a failed lookup is a 4xx, never an accept and never a crash.
    engine = await make_engine()
    # "shop" is prepaid, so its recipients need the store (an unlimited tenant's don't).
    txn = engine.transaction("shop", "s@shop.example")
    assert await engine.check_mail(txn) is None
    await engine.store.aclose()  # the database goes away mid-session
    assert str(await engine.check_rcpt(txn, "a@x.example")) == (
        "451 4.3.0 Sending policy temporarily unavailable; try again later")
    assert str(await engine.prepare(txn, "Q9")).startswith("451 4.3.0")
    await engine.abort(txn)  # logged, not raised
    assert str(await engine.check_mail(engine.transaction("news", "s@x"))).startswith(
        "451 4.3.0")


async def test_a_transaction_named_by_its_queue_id_needs_no_prepare(make_engine, tmp_path):
    """Ingress names each transaction by the queue id its message will get: after a crash
    between the spool write and commit(), reconcile finds the message by that id and keeps
    the charge; a transaction whose message never reached the spool is released."""
    state = tmp_path / "state"
    engine = await make_engine(owner="w1", state=state)
    admin = PolicyAdmin(engine)
    await admin.add_credits("shop", 5, paid=True)
    for queue_id in ("01a2000000000000aa", "01a2000000000000bb"):
        txn = engine.transaction("shop", "s@shop.example", queue_id)
        assert await engine.check_mail(txn) is None
        assert await engine.check_rcpt(txn, f"r-{queue_id}@x.example") is None
        assert await engine.prepare(txn, queue_id) is None  # nothing to record
    await engine.aclose()  # the process dies before commit()

    engine = await make_engine(owner="w1", state=state)
    in_spool = {"01a2000000000000aa"}
    assert await engine.reconcile(lambda msg_id: msg_id in in_spool) == (1, 1)
    assert (await PolicyAdmin(engine).credits("shop")).balance == 4


async def test_prepare_returns_once_the_reservations_are_durable(make_engine, tmp_path,
                                                                  backend: Backend):
    """RCPT is answered before the reservation's COMMIT (no fsync wait per recipient);
    prepare(), which ingress awaits before the 250, returns only once it is committed: a
    second connection to policy.db, as after a crash, sees every reservation."""
    if backend.name != "sqlite":
        pytest.skip("Redis applies each script before answering; durability is its config")
    state = tmp_path / "state"
    engine = await make_engine(owner="w1", state=state)
    await PolicyAdmin(engine).add_credits("shop", 50, paid=True)
    for n in range(10):
        queue_id = f"01a30000000000{n:04x}"
        txn = engine.transaction("shop", "s@shop.example", queue_id)
        assert await engine.check_mail(txn) is None
        for j in range(3):
            assert await engine.check_rcpt(txn, f"r{n}-{j}@x.example") is None
        assert await engine.prepare(txn, queue_id) is None
        with sqlite3.connect(state / "policy.db") as other:
            rows = other.execute("SELECT count(*) FROM reservations WHERE txn=?",
                                 (queue_id,)).fetchone()[0]
        assert rows == 3, f"transaction {n}: {rows} of 3 reservations committed"
        await engine.commit(txn, queue_id)


async def test_two_nodes_handing_out_the_same_queue_id_keep_their_charges_apart(
        make_engine, tmp_path, backend: Backend):
    """Queue ids are unique per node only: two nodes of a cluster can name transactions
    alike in the same millisecond. One's commit must not charge the other's reservations,
    nor its abort give them back."""
    if backend.name != "redis":
        pytest.skip("one node's workers never share a queue id (the shard is in it)")
    state = tmp_path / "shared"
    n1 = await make_engine(owner="node1/0", state=state)
    n2 = await make_engine(owner="node2/0", state=state)
    await PolicyAdmin(n1).add_credits("shop", 10, paid=True)
    same = "01a40000000000aa00"
    held, sent = (n.transaction("shop", "s@shop.example", same) for n in (n1, n2))
    for engine, txn, prefix in ((n1, held, "h"), (n2, sent, "s")):
        assert await engine.check_mail(txn) is None
        for j in range(3):
            assert await engine.check_rcpt(txn, f"{prefix}{j}@x.example") is None
    assert await n2.prepare(sent, same) is None
    await n2.commit(sent, same)  # node 2's message is accepted
    await n1.abort(held)  # node 1's client went away
    summary = await PolicyAdmin(n1).credits("shop")
    assert (summary.balance, summary.held) == (7, 0)
    # And neither node finds anything of the other's to settle after a restart.
    assert await n1.reconcile(lambda msg_id: True) == (0, 0)
    assert await n2.reconcile(lambda msg_id: True) == (0, 0)
