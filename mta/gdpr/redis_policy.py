"""An address in the policy state kept in Redis (RedisStore: `[cluster] redis_url`, or the
embedded store of several workers): what mta/gdpr/policy.py does for policy.db.

Keys (mta/policy/redis_store.py) that hold a recipient address, which policy stores
normalised (lower case):

    u:{tenant}|{month}                  hash field: the address -> its refcount
    ledger:{tenant}                     list of JSON rows with "recipient"
    txn:{txn}, hold:{msg id}            hash of JSON reservations with "rcpt"
    dd:{tenant}|{message-id}|{address}  duplicate markers (the key names the address)
    ddtxn:{txn}                         set of JSON [tenant, message-id, address]

As on SQLite, counts and amounts stay: the keyed hash (`hmac:...`) takes the address's
place, so a month's unique recipients stay as many and the ledger stays whole. Each key
is rewritten in one MULTI/EXEC (a refcount moved, a row replaced, a key renamed with its
TTL). The ledger is append-only: a row's index never changes, so LSET of the rows read is
safe while others append. An erasure walks every key of these kinds (SCAN): it is rare,
and the cost is the size of the policy state, not of the traffic.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["erase_in_redis", "find_in_redis"]


async def _keys(r: Any, pattern: str) -> list[str]:
    return [k async for k in r.scan_iter(match=pattern, count=1000)]


def _glob(text: str) -> str:
    """`text` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def find_in_redis(store: Any, address: str) -> dict[str, list[dict[str, Any]]]:
    r, p = store._redis, store.prefix
    out: dict[str, list[dict[str, Any]]] = {"unique_recipients": [], "ledger": [],
                                            "reservations": [], "dedupe": []}
    for key in await _keys(r, f"{p}u:*"):
        refs = await r.hget(key, address)
        if refs is not None:
            tenant, _, month = key[len(p) + 2:].rpartition("|")
            out["unique_recipients"].append({"tenant": tenant, "month": month,
                                             "refs": int(refs)})
    for key in await _keys(r, f"{p}ledger:*"):
        for row in await r.lrange(key, 0, -1):
            d = json.loads(row)
            if d.get("recipient") == address:
                out["ledger"].append(d)
    for key in await _keys(r, f"{p}txn:*") + await _keys(r, f"{p}hold:*"):
        for text in (await r.hgetall(key)).values():
            d = json.loads(text)
            if d.get("rcpt") == address:
                out["reservations"].append(d)
    for key in await _keys(r, f"{p}dd:*|{_glob(address)}"):
        tenant, mid, _ = key[len(p) + 3:].split("|", 2)
        out["dedupe"].append({"tenant": tenant, "message_id": mid})
    return out


async def erase_in_redis(store: Any, address: str, token: str) -> dict[str, int]:
    r, p = store._redis, store.prefix
    n = {"unique_recipients": 0, "ledger": 0, "reservations": 0, "dedupe": 0}
    for key in await _keys(r, f"{p}u:*"):
        refs = await r.hget(key, address)
        if refs is None:
            continue
        async with r.pipeline(transaction=True) as tx:
            tx.hincrby(key, token, int(refs))
            tx.hdel(key, address)
            await tx.execute()
        n["unique_recipients"] += 1
    for key in await _keys(r, f"{p}ledger:*"):
        for i, row in enumerate(await r.lrange(key, 0, -1)):
            d = json.loads(row)
            if d.get("recipient") == address:
                d["recipient"] = token
                await r.lset(key, i, json.dumps(d, separators=(",", ":")))
                n["ledger"] += 1
    for key in await _keys(r, f"{p}txn:*") + await _keys(r, f"{p}hold:*"):
        for field, text in (await r.hgetall(key)).items():
            d = json.loads(text)
            if d.get("rcpt") == address:
                d["rcpt"] = token
                await r.hset(key, field, json.dumps(d, separators=(",", ":")))
                n["reservations"] += 1
    for key in await _keys(r, f"{p}dd:*|{_glob(address)}"):
        new = key[: len(key) - len(address)] + token
        try:
            await r.rename(key, new)  # keeps its TTL
        except Exception:  # gone between SCAN and RENAME: nothing left to erase
            continue
        n["dedupe"] += 1
    for key in await _keys(r, f"{p}ddtxn:*"):
        for member in await r.smembers(key):
            t = json.loads(member)
            if len(t) == 3 and t[2] == address:
                async with r.pipeline(transaction=True) as tx:
                    tx.srem(key, member)
                    tx.sadd(key, json.dumps([t[0], t[1], token]))
                    await tx.execute()
    return n
