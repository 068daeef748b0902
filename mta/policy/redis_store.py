"""The cluster policy store: every piece of shared policy state in one Redis, one Lua script
run per state-changing operation. The decisions (reservations, commits, releases, outcomes,
credit lots, duplicate checks) are plans (plan.py), shared with SqliteStore, that one
generic script, apply.lua, applies; the operations that decide nothing (naming a message,
operator records) are the other scripts of `mta/policy/lua/` (redis_scripts.py loads them).

`RedisStore` implements `PolicyStore` with the semantics of `SqliteStore`: the same
append-only ledger and `kind`s, lots taken expiring-first, unpaid lots unusable, a refund
into an expired lot written as refund + expire, licence alerts once per (licence key,
volume, level), unique-recipient refcounts, duplicate markers pending until commit. Each script runs
atomically on the Redis server, so two nodes can never both take the last credit or the last
unit of a quota. Times come from the caller (`now`, the injected policy clock); TTLs are
computed relative to that `now`, so a test clock away from real time still gets sane
lifetimes.

Keys, all under `prefix` (default "mta:policy:"), all passed to the scripts in KEYS[]:

    seq                    hash: id counters (lot, ledger, reservation, suspension, limit)
    tenants                hash: name -> tenant spec (JSON)
    susp:{subject}         hash: id -> suspension (subject: a tenant or "@domain", verbatim)
    limits:{tenant}        hash: id -> operator limit
    c:{counter key}        string: a quota / licence counter, TTL from Bucket.expires
    u:{tenant}|{month}     hash: recipient -> refcount (unique recipients), TTL likewise
    alerts                 hash: "{licence key}|{volume}|{level}" -> time (alert sent once)
    lots:{tenant}          hash: lot id -> lot (JSON)
    wallet:{tenant}        zset: spendable lots (paid, unexpired, remaining > 0) by expiry
    lotowner, lotsdue      hash lot id -> tenant; zset of unexpired lots by expiry
    ledger:{tenant}        list: ledger rows (JSON), appended only, never trimmed
    held:{tenant}          string: reservations holding one of the tenant's credits
    txn:{txn id}           hash: reservation id -> reservation (state "reserved")
    hold:{msg id}          hash: reservation id -> reservation held until its outcome
    owner:{owner}          zset: transactions with open reservations, by first reservation
    dd:{tenant}|{message-id}|{rcpt}   hash: txn -> duplicate marker; ddtxn:{txn}: its index

Operations that start from stored records (commit, release, outcome, paying and expiring
lots) read them first and build their plan from them (plan.py), naming every key it touches;
apply.lua checks that the records are still as read (for a transaction: none added, and its
duplicate markers the same), else writes nothing and answers -1, and the operation reads and
plans again.

Durability is the Redis server's persistence setting (appendonly / fsync policy): an answer
from a script means the server applied it, not that it reached disk. Operators who need the
SqliteStore guarantee (a reservation acknowledged survives power loss) run Redis with
`appendonly yes` and `appendfsync always`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from mta.policy import redis_scripts as scripts
from mta.policy.plan import (
    DuplicatePlan,
    LotChange,
    Marker,
    ReservePlan,
    SettlePlan,
    commit_plan,
    expiry_changes,
    new_lot_change,
    outcome_plan,
    paid_change,
    release_plan,
)
from mta.policy.store import (
    LedgerEntry,
    Lot,
    OperatorLimit,
    ReserveRequest,
    ReserveResult,
    Snapshot,
    Suspension,
)
from mta.policy.tenants import Tenant, tenant_from_json, tenant_to_json

__all__ = ["DEFAULT_PREFIX", "STATE_TTL", "RedisStore"]

T = TypeVar("T")

# RCPT's reservation: the generic plan interpreter (plan.py says what a plan holds).
_APPLY = scripts.APPLY

DEFAULT_PREFIX = "mta:policy:"
STATE_TTL = 1.0  # seconds tenants / suspensions / limits are cached, as SqliteStore does
_CACHE_MAX = 10_000
# A read-then-script operation whose record keeps changing under it: give up after this
# many tries (one retry is already rare: only the same transaction changes its records).
_RETRIES = 8


def _f(x: float) -> str:
    # Floats travel as strings: cjson would round them to 14 significant digits.
    return repr(float(x))


def _lot(raw: str | dict[str, Any]) -> Lot:
    d = json.loads(raw) if isinstance(raw, str) else raw
    return Lot(id=int(d["id"]), tenant=d["tenant"], amount=int(d["amount"]),
               remaining=int(d["remaining"]), purchased=float(d["purchased"]),
               expires=float(d["expires"]), paid=bool(d["paid"]), expired=bool(d["expired"]),
               note=d.get("note") or "")


def _suspension(raw: str) -> Suspension:
    d = json.loads(raw)
    until = d.get("until")
    return Suspension(int(d["id"]), d["tenant"], d["msg_class"], d.get("reason") or "",
                      float(d["since"]), None if until is None else float(until))


def _limit(raw: str) -> OperatorLimit:
    d = json.loads(raw)
    return OperatorLimit(int(d["id"]), d["tenant"], d["name"], int(d["value"]),
                         float(d["until"]), d.get("reason") or "", float(d["since"]))


def _dd_key(m: Marker) -> str:
    return f"dd:{m.tenant}|{m.message_id}|{m.rcpt}"


def _rows(raw: dict[str, str]) -> list[dict[str, Any]]:
    return [json.loads(v) for v in raw.values()]


@dataclass(frozen=True, slots=True)
class _Record:
    """A reservation record as read (plan.Reservation), with the hash field and the text
    that a settle plan's guard compares."""

    field: str
    raw: str
    id: int
    owner: str
    state: str
    rcpt: str
    counters: tuple[str, ...]
    uniques: tuple[tuple[str, ...], ...]
    lot: int | None
    wallet: str
    msg_id: str


def _records(raw: dict[str, str]) -> list[_Record]:
    """A hash of reservation records, oldest first (the ledger keeps their order)."""
    out = []
    for f, text in raw.items():
        d = json.loads(text)
        out.append(_Record(f, text, int(d["id"]), d["owner"], d["state"], d["rcpt"],
                           tuple(d["counters"] or ()),
                           tuple(tuple(u) for u in (d["uniques"] or ())),
                           int(d["lot"]) if d.get("lot") else None, d.get("wallet") or "",
                           d.get("msg_id") or ""))
    return sorted(out, key=lambda r: r.id)


class RedisStore:
    """PolicyStore on Redis. Open with `await RedisStore.open(url, prefix=...)`."""

    shared = True  # every node of the cluster: the engine qualifies queue ids by owner

    def __init__(self, client: Any, prefix: str = DEFAULT_PREFIX) -> None:
        """`client`: a redis.asyncio.Redis with decode_responses=True."""
        self.prefix = prefix
        self._redis = client
        self._closed = False
        reg = client.register_script  # EVALSHA, loading the script again on NOSCRIPT
        self._apply = reg(_APPLY)
        self._prepare = reg(scripts.PREPARE)
        self._add_record = reg(scripts.ADD_RECORD)
        self._lift = reg(scripts.LIFT)
        self._tenants: dict[str, tuple[float, Tenant | None]] = {}
        self._states: dict[tuple[str, ...], tuple[float, Any]] = {}
        self._last_plan: tuple[ReservePlan, list[str]] | None = None
        # Transaction id -> its operations in flight (see _guarded).
        self._inflight: dict[str, set[asyncio.Future[Any]]] = {}

    @classmethod
    async def open(cls, url: str, *, prefix: str = DEFAULT_PREFIX) -> RedisStore:
        """Connect and ping: fails fast if Redis is down, so a misconfigured cluster does
        not start with state nobody else shares."""
        import redis.asyncio as aioredis  # only when configured: the default needs none

        # Timeouts: a hung Redis answers the SMTP client 451 (the engine defers on any store
        # error) instead of holding its session forever.
        client = aioredis.from_url(url, decode_responses=True, socket_timeout=10,
                                   socket_connect_timeout=5)
        try:
            await client.ping()
        except Exception as e:
            await client.aclose()
            # An OSError: `mta serve` says it in one line and exits 71, no traceback.
            raise ConnectionError(f"[cluster] redis_url {url}: {e}") from None
        return cls(client, prefix)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        for tasks in list(self._inflight.values()):
            await asyncio.wait(list(tasks))
        await self._redis.aclose()

    async def durable(self, txn_id: str) -> None:
        """Nothing to wait for beyond the operations still in flight: a script's answer
        means Redis applied it. Whether it survives a Redis crash is the server's
        persistence setting (appendonly, appendfsync), not something this store adds."""
        await self._settle(txn_id)

    # --- plumbing -----------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return self.prefix + name

    @property
    def _r(self) -> Any:
        if self._closed:
            raise RuntimeError("policy store is closed")
        return self._redis

    async def _run(self, script: Any, keys: Sequence[str], *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("policy store is closed")
        return await script(keys=[self._k(k) for k in keys], args=[self.prefix, *args])

    async def _guarded(self, txn_id: str, op: Awaitable[T]) -> T:
        """Run an operation of a transaction to its end even if the caller is cancelled
        (client gone), so that the transaction's release, which waits for it, undoes it;
        otherwise a reservation could land after its release."""
        fut = asyncio.ensure_future(op)
        self._inflight.setdefault(txn_id, set()).add(fut)

        def done(f: asyncio.Future[Any]) -> None:
            tasks = self._inflight.get(txn_id)
            if tasks is not None:
                tasks.discard(f)
                if not tasks:
                    del self._inflight[txn_id]
            if not f.cancelled():
                f.exception()  # retrieved: a cancelled caller's failure is not "unhandled"
        fut.add_done_callback(done)
        return await asyncio.shield(fut)

    async def _settle(self, txn_id: str) -> None:
        while tasks := self._inflight.get(txn_id):
            await asyncio.wait(list(tasks))

    async def _retrying(self, attempt: Callable[[], Awaitable[int]], what: str) -> int:
        for _ in range(_RETRIES):
            out = int(await attempt())
            if out != -1:
                return out
        raise RuntimeError(f"policy store: {what}: records kept changing; gave up")

    def _remember(self, cache: dict[Any, tuple[float, Any]], key: Any, value: Any) -> None:
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[key] = (asyncio.get_running_loop().time() + STATE_TTL, value)

    def _fresh(self, hit: tuple[float, Any] | None) -> bool:
        return hit is not None and hit[0] > asyncio.get_running_loop().time()

    def _invalidate(self) -> None:
        self._tenants.clear()
        self._states.clear()

    # --- tenants ------------------------------------------------------------------------
    # Tenants, suspensions and operator limits change only through an operator: cached for
    # STATE_TTL like SqliteStore (own writes drop the cache; other nodes' are seen within it).
    def cached_tenant(self, name: str) -> tuple[bool, Tenant | None]:
        """(True, what get_tenant answers) when its cache holds the name; (False, None)
        when it must be read."""
        hit = self._tenants.get(name)
        if hit is not None and self._fresh(hit):
            return True, hit[1]
        return False, None

    async def get_tenant(self, name: str) -> Tenant | None:
        hit, tenant = self.cached_tenant(name)
        if hit:
            return tenant
        raw = await self._r.hget(self._k("tenants"), name)
        tenant = tenant_from_json(raw) if raw else None
        self._remember(self._tenants, name, tenant)
        return tenant

    async def put_tenant(self, tenant: Tenant) -> None:
        self._invalidate()
        await self._r.hset(self._k("tenants"), tenant.name, tenant_to_json(tenant))
        self._invalidate()

    async def delete_tenant(self, name: str) -> bool:
        n = await self._r.hdel(self._k("tenants"), name)
        self._invalidate()
        return bool(n)

    async def list_tenants(self) -> list[Tenant]:
        raw = await self._r.hgetall(self._k("tenants"))
        return [tenant_from_json(raw[name]) for name in sorted(raw)]

    # --- suspensions and operator limits --------------------------------------------------
    async def add_suspension(self, tenant: str, msg_class: str, reason: str,
                             until: float | None, now: float) -> Suspension:
        row: dict[str, Any] = {"tenant": tenant, "msg_class": msg_class, "reason": reason,
                               "since": _f(now)}
        if until is not None:
            row["until"] = _f(until)
        sid = await self._run(self._add_record, ["seq", f"susp:{tenant}"], "suspension",
                              json.dumps(row))
        self._invalidate()
        return Suspension(int(sid), tenant, msg_class, reason, now, until)

    async def lift_suspension(self, tenant: str, msg_class: str | None, now: float) -> int:
        n = await self._run(self._lift, [f"susp:{tenant}"], "msg_class", msg_class or "")
        self._invalidate()
        return int(n)

    async def set_operator_limit(self, tenant: str, name: str, value: int, until: float,
                                 reason: str, now: float) -> OperatorLimit:
        row = {"tenant": tenant, "name": name, "value": value, "until": _f(until),
               "reason": reason, "since": _f(now)}
        lid = await self._run(self._add_record, ["seq", f"limits:{tenant}"], "limit",
                              json.dumps(row))
        self._invalidate()
        return OperatorLimit(int(lid), tenant, name, value, until, reason, now)

    async def clear_operator_limit(self, tenant: str, name: str | None, now: float) -> int:
        n = await self._run(self._lift, [f"limits:{tenant}"], "name", name or "")
        self._invalidate()
        return int(n)

    async def snapshot(self, tenants: Sequence[str], counter_keys: Sequence[str],
                       now: float) -> Snapshot:
        r = self._r
        key = tuple(tenants)
        hit = self._states.get(key)
        if hit is not None and self._fresh(hit):
            sus, lim = hit[1]
            counters = await self.counters(counter_keys) if counter_keys else {}
        else:
            # One MULTI/EXEC: suspensions, limits and counters as of one instant.
            pipe = r.pipeline(transaction=True)
            for t in tenants:
                pipe.hgetall(self._k(f"susp:{t}"))
            for t in tenants:
                pipe.hgetall(self._k(f"limits:{t}"))
            if counter_keys:
                pipe.mget([self._k(f"c:{k}") for k in counter_keys])
            out = await pipe.execute()
            n = len(tenants)
            sus = sorted((_suspension(v) for h in out[:n] for v in h.values()),
                         key=lambda s: s.id)
            lim = sorted((_limit(v) for h in out[n:2 * n] for v in h.values()),
                         key=lambda o: o.id)
            counters = ({k: int(v or 0) for k, v in zip(counter_keys, out[2 * n], strict=True)}
                        if counter_keys else {})
            self._remember(self._states, key, (sus, lim))
        return Snapshot.in_force(sus, lim, counters, now)

    def cached_snapshot(self, tenants: Sequence[str], now: float) -> Snapshot | None:
        """`snapshot` without counters, when the cache holds it (MAIL FROM asks on every
        message and then needs no round trip); None when it must be read."""
        hit = self._states.get(tuple(tenants))
        if hit is None or not self._fresh(hit):
            return None
        return Snapshot.in_force(*hit[1], {}, now)

    # --- reservations -------------------------------------------------------------------
    async def reserve(self, req: ReserveRequest) -> ReserveResult:
        plan = req.plan
        keys = [*self._plan_keys(plan), f"txn:{req.txn_id}", f"owner:{req.owner}"]
        raw = await self._guarded(req.txn_id, self._run(
            self._apply, keys, plan.doc, _f(req.now), req.txn_id, req.owner, req.tenant,
            req.recipient))
        out = json.loads(raw)
        used = out.get("licence_used")
        return ReserveResult(bool(out["ok"]), out.get("refused"),
                             None if used is None else int(used),
                             tuple(int(a) for a in (out.get("alerts") or ())),
                             tuple(out.get("filled") or ()))  # cjson: empty is {}

    def _plan_keys(self, plan: ReservePlan) -> list[str]:
        """The keys apply.lua touches for `plan`, but the transaction's own."""
        last = self._last_plan
        if last is not None and last[0] is plan:
            return last[1]
        keys = ["seq", "alerts", *(f"c:{c.key}" for c in plan.counts)]
        for u in plan.uniques:
            keys += [f"u:{u.tenant}|{u.month}", f"c:{u.key}"]
        if plan.take is not None:
            keys += self._wallet_keys(plan.take)
        self._last_plan = (plan, keys)
        return keys

    @staticmethod
    def _wallet_keys(wallet: str) -> list[str]:
        return [f"lots:{wallet}", f"wallet:{wallet}", f"ledger:{wallet}", f"held:{wallet}"]

    async def prepare(self, txn_id: str, msg_id: str) -> None:
        await self._guarded(txn_id, self._run(self._prepare, [f"txn:{txn_id}"], txn_id,
                                              msg_id))

    async def _txn_state(self, txn_id: str
                         ) -> tuple[dict[str, str], int, dict[Marker, str]]:
        """The transaction's reservation records and pending duplicate markers (each with
        its index entry as stored), as read: the plans built from them are guarded by
        them."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._k(f"txn:{txn_id}"))
        pipe.smembers(self._k(f"ddtxn:{txn_id}"))
        raw, members = await pipe.execute()
        return raw, len(members), {Marker(*json.loads(m)): m for m in sorted(members)}

    async def commit(self, txn_id: str, msg_id: str, hold_credit: bool, now: float) -> int:
        async def attempt() -> int:
            raw, dd_count, markers = await self._txn_state(txn_id)
            rows = [r for r in _records(raw) if r.state == "reserved"]
            plan = commit_plan(rows, msg_id, hold_credit, list(markers))
            owners = sorted({r.owner for r in rows})
            dds = [_dd_key(m) for m in plan.markers]
            keys = [f"txn:{txn_id}", f"hold:{msg_id}", f"ddtxn:{txn_id}", *dds,
                    *(f"owner:{o}" for o in owners),
                    *{f"held:{r.wallet}" for r in plan.final}]
            doc = {"op": "commit", "hash": f"txn:{txn_id}", "count": len(raw),
                   "txn": txn_id, "msg": msg_id, "owners": owners,
                   "records": [{"field": r.field, "raw": r.raw} for r in rows],
                   "hold": [r.field for r in plan.hold],
                   "final": [r.wallet for r in plan.final],
                   "dd_count": dd_count, "dd": dds}
            return int(await self._run(self._apply, keys, json.dumps(doc), _f(now)))
        await self._settle(txn_id)
        return await self._guarded(txn_id, self._retrying(attempt, f"commit {txn_id}"))

    async def release(self, txn_id: str, now: float, recipient: str | None = None) -> int:
        async def attempt() -> int:
            raw, dd_count, markers = await self._txn_state(txn_id)
            rows = [r for r in _records(raw) if r.state == "reserved"]
            plan = release_plan(rows, recipient, list(markers))
            drop = [[markers[m], _dd_key(m)] for m in plan.markers]
            return await self._give_back(plan, f"txn:{txn_id}", len(raw), now, txn_id,
                                         sorted({r.owner for r in rows}), dd_count, drop)
        # An operation of this transaction still in flight (its caller was cancelled)
        # lands first, so that this release undoes it too.
        await self._settle(txn_id)
        return await self._retrying(attempt, f"release {txn_id}")

    async def outcome(self, msg_id: str, recipient: str, refund: bool, now: float) -> bool:
        async def attempt() -> int:
            raw = await self._r.hgetall(self._k(f"hold:{msg_id}"))
            held = [r for r in _records(raw) if r.rcpt == recipient and r.lot is not None]
            if not held:
                return 0  # not held (charge = "accepted"), or already settled
            first = held[0]  # the oldest
            plan = outcome_plan(first, msg_id, recipient, first.lot or 0, first.wallet,
                                refund)
            return await self._give_back(plan, f"hold:{msg_id}", len(raw), now)
        return bool(await self._retrying(attempt, f"outcome {msg_id}"))

    async def _give_back(self, plan: SettlePlan, hash_key: str, count: int, now: float,
                         txn_id: str | None = None, owners: Sequence[str] = (),
                         dd_count: int = 0, dd_drop: Sequence[list[str]] = ()) -> int:
        """Run a settle plan through apply.lua: its records (in `hash_key`, which held
        `count` when read) are guards, and so, for a transaction, are its duplicate
        markers; -1 if any changed meanwhile."""
        keys = [hash_key]
        undos = []
        for u in plan.undos:
            rec = u.record
            keys += [f"c:{k}" for k in u.counters]
            for t, m, k in u.uniques:
                keys += [f"u:{t}|{m}", f"c:{k}"]
            undo: dict[str, Any] = {"field": rec.field, "raw": rec.raw, "rcpt": u.rcpt,
                                    "msg_id": u.msg_id, "counters": list(u.counters),
                                    "uniques": [list(x) for x in u.uniques],
                                    "wallet": u.wallet, "unhold": u.unhold}
            if u.lot is not None:
                undo["lot"] = u.lot
                keys += ["seq", *self._wallet_keys(u.wallet)]
            elif u.unhold:
                keys.append(f"held:{u.wallet}")
            undos.append(undo)
        doc: dict[str, Any] = {"op": "settle", "kind": plan.kind, "hash": hash_key,
                               "count": count, "undos": undos, "owners": list(owners),
                               "dd_drop": [list(d) for d in dd_drop]}
        keys += [f"owner:{o}" for o in owners]
        if txn_id is not None:
            doc["txn"], doc["dd_count"] = txn_id, dd_count
            keys += [f"ddtxn:{txn_id}", *(d[1] for d in dd_drop)]
        return int(await self._run(self._apply, keys, json.dumps(doc), _f(now)))

    async def open_reservations(self, owner: str) -> list[tuple[str, str | None]]:
        r = self._r
        txns = await r.zrange(self._k(f"owner:{owner}"), 0, -1)
        if not txns:
            return []
        pipe = r.pipeline(transaction=False)
        for txn in txns:
            pipe.hgetall(self._k(f"txn:{txn}"))
        out = []
        for txn, raw in zip(txns, await pipe.execute(), strict=True):
            rows = [row for row in _rows(raw) if row["state"] == "reserved"]
            if rows:
                ids = [row["msg_id"] for row in rows if row.get("msg_id")]
                out.append((txn, max(ids) if ids else None))
        return out

    async def counters(self, keys: Sequence[str]) -> dict[str, int]:
        if not keys:
            return {}
        values = await self._r.mget([self._k(f"c:{k}") for k in keys])
        return {k: int(v or 0) for k, v in zip(keys, values, strict=True)}

    # --- credits ------------------------------------------------------------------------
    async def add_lot(self, tenant: str, amount: int, paid: bool, purchased: float,
                      expires: float, note: str) -> Lot:
        change = new_lot_change(paid, purchased, note)
        out = await self._change_lots(tenant, [change], amount=amount, expires=_f(expires))
        return _lot(out[1])

    async def mark_paid(self, lot_id: int, now: float) -> Lot | None:
        tenant = await self._r.hget(self._k("lotowner"), str(lot_id))
        if tenant is None:
            return None
        for _ in range(_RETRIES):
            raw = await self._r.hget(self._k(f"lots:{tenant}"), str(lot_id))
            if raw is None:
                return None
            change = paid_change(_lot(raw), now)  # raises if it expired
            if change is None:
                return _lot(raw)
            out = await self._change_lots(tenant, [change])
            if out != -1:
                return _lot(out[1])
        raise RuntimeError(f"policy store: mark_paid {lot_id}: lot kept changing; gave up")

    async def _change_lots(self, tenant: str, changes: Sequence[LotChange],
                           **new: Any) -> Any:
        """Apply lot changes of one tenant through apply.lua (`new`: the amount and expiry
        of a lot to create): per change, the lot before and after (JSON); -1 if a lot's
        flags changed since the changes were decided."""
        doc = {"op": "lots", "tenant": tenant, "changes": [
            {"lot": c.lot, "kind": c.kind, "per_credit": c.per_credit,
             "was_paid": c.was_paid, "was_expired": c.was_expired, "paid": c.paid,
             "expired": c.expired, "time": _f(c.time), "note": c.note, **new}
            for c in changes]}
        keys = ["seq", "lotowner", "lotsdue", f"lots:{tenant}", f"wallet:{tenant}",
                f"ledger:{tenant}"]
        return await self._run(self._apply, keys, json.dumps(doc), _f(changes[0].time))

    async def lots(self, tenant: str) -> list[Lot]:
        lots = [_lot(v) for v in (await self._r.hgetall(self._k(f"lots:{tenant}"))).values()]
        return sorted(lots, key=lambda lot: (lot.expires, lot.id))

    async def held(self, tenant: str) -> int:
        return int(await self._r.get(self._k(f"held:{tenant}")) or 0)

    async def history(self, tenant: str, limit: int) -> list[LedgerEntry]:
        rows = await self._r.lrange(self._k(f"ledger:{tenant}"), -limit, -1)
        out = []
        for raw in rows:
            d = json.loads(raw)
            out.append(LedgerEntry(int(d["id"]), float(d["time"]), d["tenant"], int(d["lot"]),
                                   int(d["delta"]), d["kind"], d.get("msg_id") or "",
                                   d.get("recipient") or "", d.get("note") or ""))
        return out

    async def expire_lots(self, now: float) -> list[Lot]:
        r = self._r
        due = await r.zrangebyscore(self._k("lotsdue"), "-inf", _f(now))
        if not due:
            return []
        owners = await r.hmget(self._k("lotowner"), due)
        by_tenant: dict[str, list[str]] = {}
        for lot_id, tenant in zip(due, owners, strict=True):
            if tenant is None:  # no such lot: drop the stray index entry
                await r.zrem(self._k("lotsdue"), lot_id)
            else:
                by_tenant.setdefault(tenant, []).append(lot_id)
        out: list[Lot] = []
        for tenant, ids in by_tenant.items():
            for _ in range(_RETRIES):
                raws = await r.hmget(self._k(f"lots:{tenant}"), ids)
                lots = [_lot(raw) for raw in raws if raw is not None]
                stray = [i for i, raw in zip(ids, raws, strict=True)
                         if raw is None or _lot(raw).expired]
                if stray:  # not lots that are due: drop their index entries
                    await r.zrem(self._k("lotsdue"), *stray)
                changes = expiry_changes(lots, now)
                if not changes:
                    break
                done = await self._change_lots(tenant, changes)
                if done != -1:
                    out += [_lot(raw) for raw in done[::2]]  # as they were before
                    break
            else:
                raise RuntimeError(f"policy store: expire lots of {tenant}: kept changing")
        return sorted(out, key=lambda lot: lot.id)

    # --- duplicates and housekeeping ------------------------------------------------------
    async def check_duplicate(self, txn_id: str, plan: DuplicatePlan) -> bool:
        m = plan.marker
        keys = [_dd_key(m), f"ddtxn:{txn_id}"]
        # The index entry names the marker (its key's parts; a Message-ID may hold "|").
        return bool(await self._guarded(txn_id, self._run(
            self._apply, keys, plan.doc, _f(plan.now), txn_id, json.dumps(list(m)))))

    async def prune(self, now: float, dedupe_since: float, uniq_before: str) -> None:
        """Nothing to do: counters, unique-recipient sets and duplicate markers carry TTLs
        and disappear on their own; the ledger is never trimmed."""
        if self._closed:
            raise RuntimeError("policy store is closed")
