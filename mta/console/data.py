"""What the console pages show, read from the same objects the admin JSON API calls (queue
operations, policy admin, shaper, reputation guard, licence gate), so a page and
`curl /api/v1/admin/...` never disagree."""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import Any

from mta.http import state
from mta.http.admin_reputation import REPUTATION
from mta.http.admin_suppressions import SUPPRESSIONS
from mta.shaping.egress import DEFAULT_SOURCE

__all__ = ["AGE_BUCKETS", "licence", "paths", "qshape", "queued_messages", "tenant_detail",
           "tenants"]

# qshape's buckets, in minutes: 0-5, 5-10, 10-20, ... doubling, and the rest.
AGE_BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
# The Queue page lists messages from at most this many queued and held ones (oldest
# first); its table is counted in the spool (qshape), whatever the queue holds.
MAX_SCAN = 1000
_MAX_PATHS = 50


async def queued_messages(request: Any, tenant: str | None,
                          limit: int = MAX_SCAN) -> tuple[list[dict[str, Any]], bool]:
    """Queued and held messages, oldest first (of `tenant` only, when given), and whether
    the scan stopped at `limit`."""
    ops = request.config_dict[state.QUEUE_OPS]
    if ops is None:
        return [], False
    out: list[dict[str, Any]] = []
    for st in ("queued", "held"):
        after = None
        while len(out) < limit:
            page = await ops.queue_list(st, min(1000, limit - len(out) or 1), after)
            if not page:
                break
            out.extend(m for m in page if tenant is None or m["tenant"] == tenant)
            after = page[-1]["id"]
            if len(page) < 1000:
                break
    out.sort(key=lambda m: m["received_at"])
    return out[:limit], len(out) >= limit



async def qshape(request: Any, tenant: str | None) -> dict[str, Any]:
    """Sites x age buckets of the recipients still to deliver (held ones counted apart),
    counted in the spool by one query per shard (GET /api/v1/admin/queue-shape does the
    same), so the table is exact however large the queue."""
    ops = request.config_dict[state.QUEUE_OPS]
    counts = await ops.queue_shape(list(AGE_BUCKETS), tenant) if ops is not None else []
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
    return {"rows": table, "totals": totals, "total": sum(totals),
            "held": sum(held.values()), "buckets": AGE_BUCKETS}


async def licence(request: Any) -> dict[str, Any] | None:
    admin = request.config_dict[state.POLICY_ADMIN]
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
    admin = request.config_dict[state.POLICY_ADMIN]
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
    admin = request.config_dict[state.POLICY_ADMIN]
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
    shaper = request.config_dict[state.SHAPER]
    ops = request.config_dict[state.QUEUE_OPS]
    if shaper is None:
        return {"paths": [], "sources": [], "suspensions": []}
    sites: list[str] = []
    if ops is not None:
        by_site = (await ops.queue_stats()).get("by_site", {})
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
