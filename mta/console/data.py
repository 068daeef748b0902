"""What the console pages show, read from the same objects the admin JSON API calls (queue
operations, policy admin, shaper, reputation guard, licence gate), so a page and
`curl /api/v1/admin/...` never disagree."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from mta.http import state as state_key
from mta.http.admin_reputation import REPUTATION
from mta.http.admin_suppressions import SUPPRESSIONS
from mta.shaping.egress import DEFAULT_SOURCE

__all__ = ["AGE_BUCKETS", "licence", "paths", "qshape", "queue_stats", "queued_messages",
           "tenant_detail", "tenants"]

# qshape's buckets, in minutes: 0-5, 5-10, 10-20, ... doubling, and the rest.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
# The Queue page lists PER_PAGE messages of one state at a time, in acceptance order,
# paged by a cursor (the spool's keyset paging: a page deep in the queue costs what the
# first costs). A list narrowed to one site, or to a portal account's tenant, is filtered
# by the spool itself.
PER_PAGE = 100
# The qshape table shows this many sites per page, the busiest first (with the totals of
# all of them); 2,000 sites in one table take the browser most of a second to lay out.
SITES_PER_PAGE = 50
_MAX_PATHS = 50


def _snapshots(request: Any) -> Any:
    from mta.console.site import CONSOLE
    return request.app[CONSOLE].snapshots


async def queued_messages(request: Any, tenant: str | None, *, state: str = "queued",
                          after: str | None = None, site: str = "",
                          per_page: int = PER_PAGE) -> dict[str, Any]:
    """One page of `state` messages (of `tenant` only, when given; with a recipient at
    `site`, when given): {"messages", "next" (the cursor of the next page, or None)}.
    The spool filters (one query per shard), so every page is full however few of the
    queue's messages match."""
    ops = request.config_dict[state_key.QUEUE_OPS]
    if ops is None:
        return {"messages": [], "next": None}
    where = None if not site else "" if site == "(unrouted)" else site
    # One more than a page says whether there is a next one.
    page = await ops.queue_list(state, per_page + 1, after, tenant=tenant, site=where)
    more = len(page) > per_page
    page = page[:per_page]
    return {"messages": page, "next": page[-1]["id"] if more and page else None}


def _shape_counter(ops: Any, tenant: str | None) -> Any:
    async def count() -> list[list[Any]]:
        return await ops.queue_shape(list(AGE_BUCKETS), tenant) if ops is not None else []
    return count


def warm(request: Any, tenant: str | None) -> None:
    """At sign-in: start the counts the first pages show (Overview, Queue)."""
    ops = request.config_dict[state_key.QUEUE_OPS]
    if ops is None:
        return
    snapshots = _snapshots(request)
    shape = _shape_counter(ops, tenant)
    if tenant is not None:
        snapshots.warm(("shape", tenant), shape)
        return

    async def stats_then_shape() -> Any:
        # One after the other: the spool answers reads one at a time, and the Overview
        # the sign-in lands on needs the stats only.
        value = await _stats_counter(ops)()
        snapshots.warm(("shape", None), shape)
        return value

    snapshots.warm(("stats",), stats_then_shape)


def _stats_counter(ops: Any) -> Any:
    async def count() -> dict[str, Any]:
        stats = await ops.queue_stats()
        first = await ops.queue_list("queued", 1, None)
        return {**stats, "oldest": first[0]["received_at"] if first else None}
    return count


async def queue_stats(request: Any) -> tuple[dict[str, Any] | None, float]:
    """`QueueOps.queue_stats` (GET /api/v1/admin/queue-stats) and the oldest queued
    message's time ("oldest"), through the snapshots, and their age in seconds."""
    ops = request.config_dict[state_key.QUEUE_OPS]
    if ops is None:
        return None, 0.0
    return await _snapshots(request).get(("stats",), _stats_counter(ops))


async def qshape(request: Any, tenant: str | None) -> dict[str, Any]:
    """Sites x age buckets of the recipients still to deliver (held ones counted apart),
    counted in the spool by one query per shard (GET /api/v1/admin/queue-shape does the
    same), so the table is exact however large the queue; through the snapshots: "age"
    says how old the count is."""
    ops = request.config_dict[state_key.QUEUE_OPS]
    counts, age = await _snapshots(request).get(("shape", tenant), _shape_counter(ops, tenant))
    width = len(AGE_BUCKETS) + 1
    rows: dict[str, list[int]] = {}
    held: Counter[str] = Counter()
    for site, is_held, bucket, n in counts:
        site = site or "(unrouted)"
        cells = rows.setdefault(site, [0] * width)
        if is_held:
            held[site] += n
        else:
            cells[min(bucket, width - 1)] += n
    table = sorted(({"site": s, "total": sum(c), "buckets": c, "held": held[s]}
                    for s, c in rows.items()), key=lambda r: (-r["total"] - r["held"], r["site"]))
    totals = [sum(r["buckets"][i] for r in table) for i in range(width)]
    busy = [i for i, n in enumerate(totals) if n]
    oldest = ("" if not busy else f"over {AGE_BUCKETS[-1]} minutes" if busy[-1] == width - 1
              else f"under {AGE_BUCKETS[busy[-1]]} minutes")
    return {"rows": table, "totals": totals, "total": sum(totals),
            "held": sum(held.values()), "buckets": AGE_BUCKETS, "age": age, "oldest": oldest}


async def licence(request: Any) -> dict[str, Any] | None:
    admin = request.config_dict[state_key.POLICY_ADMIN]
    if admin is None:
        return None
    engine = admin.engine
    await engine.refresh_licence_usage()
    st = engine.licence.status(engine.clock.now())
    return {"state": st.state, "problem": st.problem, "licensee": st.licensee,
            "used": st.used, "volume": st.volume, "ratio": st.ratio,
            "month": engine.licence.month}


async def _reputation(request: Any, name: str) -> dict[str, Any] | None:
    guard = request.config_dict.get(REPUTATION)
    if guard is None:
        return None
    try:
        return await guard.show(name)
    except Exception:  # unknown to the guard: no ladder shown
        return None


TENANTS_PER_PAGE = 100
SUPPRESSIONS_SHOWN = 50


async def tenants(request: Any, only: str | None, page: int = 0,
                  per_page: int = TENANTS_PER_PAGE) -> tuple[list[dict[str, Any]], int]:
    """One page of tenants (all when `per_page` is 0) and how many there are. The
    reputation state is the guard's last reading (at most `[reputation] interval` old),
    so a page of many tenants costs no figures."""
    admin = request.config_dict[state_key.POLICY_ADMIN]
    if admin is None:
        return [], 0
    guard = request.config_dict.get(REPUTATION)
    every = [t for t in await admin.list_tenants() if only is None or t.name == only]
    chosen = every[page * per_page:(page + 1) * per_page] if per_page else every
    out = []
    for t in chosen:
        rep = guard.states.get(t.name) if guard is not None else None
        out.append({"name": t.name, "plan": t.plan, "status": t.status, "pool": t.pool,
                    "prepaid": t.prepaid,
                    "reputation": (rep.name if rep is not None else "ok") if guard else None,
                    "suspensions": len(await admin.suspensions(t.name))})
    return out, len(every)


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


async def tenant_detail(request: Any, name: str) -> dict[str, Any] | None:
    admin = request.config_dict[state_key.POLICY_ADMIN]
    if admin is None or await admin.engine.tenants.get(name) is None:
        return None
    credits = _plain(await admin.credits(name))
    return {"name": name, "credits": credits,
            "usage": [_plain(u) for u in await admin.usage(name)],
            "suspensions": [_plain(s) for s in await admin.suspensions(name)],
            "reputation": await _reputation(request, name),
            **await _suppressions(request, name)}


async def _suppressions(request: Any, name: str) -> dict[str, Any]:
    """The first SUPPRESSIONS_SHOWN entries of the tenant's own list (GET
    /api/v1/suppressions?scope=NAME pages through all of them)."""
    lists = request.config_dict.get(SUPPRESSIONS)
    if lists is None:
        return {"suppressed": [], "suppressed_more": False}
    entries, cursor = await lists.list(name, None, SUPPRESSIONS_SHOWN)
    return {"suppressed": [e.as_dict() for e in entries], "suppressed_more": cursor is not None}


async def paths(request: Any) -> dict[str, Any]:
    """Per source -> site with queued mail: `Shaper.explain` (= `mta shaping explain`),
    and the egress sources with their warm-up and blocklist state."""
    shaper = request.config_dict[state_key.SHAPER]
    ops = request.config_dict[state_key.QUEUE_OPS]
    if shaper is None:
        return {"paths": [], "sources": [], "suspensions": []}
    sites: list[str] = []
    if ops is not None:
        stats, _ = await queue_stats(request)
        by_site = (stats or {}).get("by_site", {})
        sites = [s for s, _ in sorted(by_site.items(), key=lambda kv: -kv[1])
                 if s != "(unrouted)"][:_MAX_PATHS]
    sources = list(shaper.egress.sources) or [DEFAULT_SOURCE]
    explained = []
    for site in sites:
        for source in sources:
            explained.append(await shaper.explain(shaper.path(source, site)))
    egress = []
    for name in sources:
        try:
            info = shaper.egress.explain(name)
        except KeyError:
            info = {}
        egress.append({"name": name, "info": info, "shifted": name in shaper.egress.shifted,
                       "warmup_day": shaper.egress.warmup_day(name) if info else None})
    return {"paths": explained, "sources": egress,
            "suspensions": [s.as_dict() for s in shaper.suspensions.active()]}
