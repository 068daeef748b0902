"""The duplicate rule is one plan (plan.py: duplicate_plan) that each store applies: one
script of sessions, run against policy.db and against Redis in the same test, must get the
same answers from both, and the answers a user expects (a repeat within the window is
dropped, a retry of a message that was never accepted is not)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from mta.observe import EventLog
from mta.policy import ManualClock, PolicyAdmin, PolicyEngine

from .conftest import config

Open = Callable[[], Awaitable[PolicyEngine]]


async def _kept(engine: PolicyEngine, message_id: str, rcpts: list[str],
                queue_id: str | None = None, end: str = "commit") -> list[str]:
    """One message of "shop" to the end of DATA: the recipients not dropped as duplicates,
    then `end`: "commit" (250), "abort" (451 at the spool write) or "crash" (the process
    dies after the spool write, before its commit)."""
    txn = engine.transaction("shop", "s@shop.example", queue_id)
    assert await engine.check_mail(txn) is None
    for r in rcpts:
        assert await engine.check_rcpt(txn, r) is None
    assert await engine.check_data(txn, None) is None
    kept = [r for r in rcpts if not await engine.is_duplicate(txn, message_id, r)]
    if end == "abort":
        await engine.abort(txn)
    elif end == "crash":
        assert await engine.prepare(txn, txn.id) is None  # durable, never committed
    else:
        assert await engine.prepare(txn, txn.id) is None
        await engine.commit(txn, txn.id)
    return kept


async def _script(open_engine: Open, clock: ManualClock) -> list[object]:
    """Every rule of duplicate suppression, in sessions; the answers in order."""
    engine = await open_engine()
    await PolicyAdmin(engine).add_credits("shop", 100, paid=True)
    out: list[object] = []
    out.append(await _kept(engine, "<m1@shop>", ["a@x.example", "b@x.example"]))
    # A repeat with one more recipient: the repeat dropped (and given back), the new one
    # kept; its marker, written first, outlives the release of the dropped one.
    out.append(await _kept(engine, "<m1@shop>", ["c@x.example", "A@x.example"]))
    out.append(await _kept(engine, "<m1@shop>", ["c@x.example"]))
    # Two attempts in flight at once are both sent (at least once); then it is known.
    t1, t2 = (engine.transaction("shop", "s@shop.example") for _ in range(2))
    for t in (t1, t2):
        assert await engine.check_mail(t) is None
        assert await engine.check_rcpt(t, "a@x.example") is None
    out.append([await engine.is_duplicate(t, "<m2@shop>", "a@x.example") for t in (t1, t2)])
    for t in (t1, t2):
        await engine.commit(t, t.id)
    out.append(await _kept(engine, "<m2@shop>", ["a@x.example"]))
    # An attempt refused at the spool write does not make its retry a duplicate.
    out.append(await _kept(engine, "<m3@shop>", ["a@x.example"], end="abort"))
    out.append(await _kept(engine, "<m3@shop>", ["a@x.example"]))
    # Housekeeping keeps what the window still covers (duplicate_window = 1 day).
    clock.advance(86400 - 60)
    await engine.maintain()
    out.append(await _kept(engine, "<m3@shop>", ["a@x.example"]))
    clock.advance(120)
    await engine.maintain()
    out.append(await _kept(engine, "<m3@shop>", ["a@x.example"]))
    # The process dies after the spool write of one message and before that of another:
    # at the next start, reconciliation commits the first (its repeat is a duplicate) and
    # releases the second (its retry is not).
    out.append(await _kept(engine, "<m4@shop>", ["a@x.example"], "QIN", end="crash"))
    out.append(await _kept(engine, "<m5@shop>", ["a@x.example"], "QLOST", end="crash"))
    await engine.aclose()
    engine = await open_engine()
    out.append(await engine.reconcile(lambda msg_id: msg_id == "QIN"))
    out.append(await _kept(engine, "<m4@shop>", ["a@x.example"]))
    out.append(await _kept(engine, "<m5@shop>", ["a@x.example"]))
    # What was charged: every recipient kept, none dropped.
    out.append((await PolicyAdmin(engine).credits("shop")).balance)
    await engine.aclose()
    return out


EXPECTED: list[object] = [
    ["a@x.example", "b@x.example"], ["c@x.example"], [],
    [False, False], [],
    ["a@x.example"], ["a@x.example"],
    [], ["a@x.example"],
    ["a@x.example"], ["a@x.example"], (1, 1), [], ["a@x.example"],
    100 - 9,  # a, b, c, two in flight, three retries after the window or a loss, QIN
]


async def test_both_stores_answer_the_same_duplicate_script_alike(
        tmp_path: Path, redis_url: str, clock: ManualClock) -> None:
    answers = {}
    start = clock.now()
    redis_toml = f"\n[cluster]\nredis_url = \"{redis_url}\"\n"
    for name, toml in (("sqlite", ""), ("redis", redis_toml)):
        clock.set(start)
        state = tmp_path / name
        events = EventLog(None, keep_recent=1000)

        async def open_engine(state: Path = state, toml: str = toml,
                              events: EventLog = events) -> PolicyEngine:
            return await PolicyEngine.open(
                config(toml, tmp=tmp_path), state, clock=clock, events=events,
                redis_prefix=f"test:dupstores:{tmp_path.name}:")
        answers[name] = await _script(open_engine, clock)
        # One event per recipient dropped, on either store.
        assert sum(e["event"] == "duplicate" for e in events.recent) == 5, name
    assert answers["sqlite"] == EXPECTED
    assert answers["redis"] == EXPECTED
