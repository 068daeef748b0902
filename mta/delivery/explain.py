"""`mta queue explain ID`: why each recipient of a message is where it is.

Reads the dispatcher's state (sites, paths, what each worker is doing) and asks the
shaper's gate (`Shaper.holds`, the same checks workers pass) for every source of the
message's egress pool, so the answer names every limit a worker would wait for: the retry
schedule, a suspension or dead-site timer, a warm-up cap, the [rate_limits], the path's
max_message_rate, the licence's connection cap, the connection limit and rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mta.dns import Status, tlsa_name
from mta.queue import MessageInfo
from mta.shaping import Hold
from mta.shaping.hold import at

if TYPE_CHECKING:
    from mta.delivery.dispatcher import Dispatcher, SiteState

__all__ = ["explain", "source_holds", "tls_policy"]

# Holds a new connection meets; an idle connection of the path needs none of them.
_CONNECTION_HOLDS = ("licence_connections", "connection_limit", "max_connection_rate")


async def explain(d: Dispatcher, info: MessageInfo) -> dict:
    """Per recipient: `waiting_for` names the one limit that holds it (retry, suspension,
    warmup_cap, a [rate_limits] name, max_message_rate, licence_connections,
    connection_limit, max_connection_rate, ...), `until` when it ends (epoch seconds, None
    when it is not a time), `detail` says it in words, and `shaping` lists every hold of
    every source the message may leave from; `tls_policy` the TLS policy its next
    attempt applies (see `tls_policy`). A recipient an MTA-STS enforce policy or DANE
    deferred has the reason in `last_reply` ("MTA-STS policy of example.com (enforce):
    ...", "DANE for MX host mx.example.com of example.com: ...")."""
    now = d.clock()
    out: list[dict] = []
    for r in info.recipients:
        entry: dict[str, Any] = {
            "recipient": r.address, "state": r.state, "site": r.site,
            "attempts": r.attempts,
            "last_reply": str(r.last_reply) if r.last_reply else None}
        if r.state in ("queued", "held"):
            entry["tls_policy"] = tls_policy(d, r.address.rpartition("@")[2].lower(),
                                             r.site)
        if r.state == "held" or info.state == "held":
            entry.update(waiting_for="held", until=None,
                         detail="held by an administrator (mta queue release)")
        elif r.state != "queued":
            entry["waiting_for"] = None
        elif r.next_attempt > now:
            entry.update(waiting_for="retry", until=r.next_attempt, detail=(
                f"attempt {r.attempts + 1} at {at(r.next_attempt)} (retry schedule)"
                + (f" after {r.last_reply}" if r.last_reply else "")))
        else:
            domain = r.address.rpartition("@")[2].lower()
            site = d.sites.get(r.site or "") or d.sites.get(
                d.resolver.cached_site(domain) or "")
            if site is None:
                entry.update(waiting_for="routing", until=None,
                             detail=f"MX lookup of {domain}")
            else:
                entry["site"] = site.name
                entry.update(await _explain_at(d, site, info, now))
        out.append(entry)
    return {"id": info.id, "tenant": info.tenant, "state": info.state, "now": now,
            "recipients": out}


def tls_policy(d: Dispatcher, domain: str, site: str | None = None) -> str:
    """The TLS policy the next attempt applies as far as known without a lookup: a [tls]
    policy entry, "dane" when a validated TLSA RRset of one of the site's MX hosts is in
    the resolver's cache (DANE before MTA-STS, RFC 8461 2), an MTA-STS policy in the
    cache (mta-sts-enforce / -testing), else "path" (the path's own tls: [delivery] tls
    or [shaping."site"] tls)."""
    t = d.cfg.tls
    override = t.policy.get(domain)
    if override is not None and override != "mta-sts":
        return override
    if t.dane and _dane_cached(d, site):
        return "dane"
    if override == "mta-sts" or t.mta_sts:
        policy = d.tls.sts.cached(domain)
        if policy is not None:
            return f"mta-sts-{policy.mode}"
    return "path"


async def source_holds(d: Dispatcher, site: SiteState, tenant: str, pool_name: str,
                       parents: tuple[str, ...] = ()) -> dict[str, list[Hold]]:
    """Per source of the pool (weight > 0): what the gate holds a message on now. An idle
    connection of the path lifts the connection holds (no new one is needed)."""
    out: dict[str, list[Hold]] = {}
    paths = d.paths.of_site(site.name)
    for name, weight in d.shaper.egress.pools.get(pool_name, ()):
        if weight <= 0:
            continue
        holds = await d.shaper.holds(d.shaper.path(name, site.name), tenant, parents)
        p = paths.get(name)
        if p is not None and p.pool.idle_count:
            holds = [h for h in holds if h.limit not in _CONNECTION_HOLDS]
        out[name] = holds
    return out


async def _explain_at(d: Dispatcher, site: SiteState, info: MessageInfo,
                      now: float) -> dict:
    pool_name = await d.pool_for(info.tenant, info.pool)
    by_source = await source_holds(d, site, info.tenant, pool_name, info.parents)
    shaping = {name: [h.as_dict() for h in holds] for name, holds in by_source.items()}
    flight = site.inflight.get(info.id)
    if flight is not None:
        path = flight.path.config
        if flight.stage == "sending":
            return {"waiting_for": "sending", "until": None, "shaping": shaping,
                    "detail": f"in an SMTP transaction on {path.key}"}
        if flight.hold is not None:  # waiting out a rate at the gate
            h = flight.hold
            return {"waiting_for": h.limit, "until": h.until, "shaping": shaping,
                    "detail": h.detail.replace("next message allowed at",
                                               "this message goes at")}
        conn = [h for h in by_source.get(path.source, [])
                if h.limit in (*_CONNECTION_HOLDS, "suspension")]
        if conn:
            return {"waiting_for": conn[0].limit, "until": conn[0].until,
                    "shaping": shaping, "detail": conn[0].detail}
        return {"waiting_for": "connection", "until": None, "shaping": shaping,
                "detail": f"opening a connection on {path.key}"}
    if not by_source:
        return {"waiting_for": "egress", "until": None, "shaping": shaping,
                "detail": f"egress pool {pool_name!r} has no usable source"}
    if any(not holds for holds in by_source.values()):
        return {"waiting_for": "worker", "until": None, "shaping": shaping,
                "detail": f"next in line for site {site.name} "
                          f"({site.workers} worker(s) busy)"}
    # Every source is held: the message leaves by the one whose first hold ends first.
    first = min((holds[0] for holds in by_source.values()),
                key=lambda h: float("inf") if h.until is None else h.until)
    return {"waiting_for": first.limit, "until": first.until, "shaping": shaping,
            "detail": first.detail}


def _dane_cached(d: Dispatcher, site: str | None) -> bool:
    state = d.sites.get(site or "")
    cached = getattr(d.resolver, "cached", None)
    if state is None or cached is None:
        return False
    for host in state.hosts:
        answer = cached(tlsa_name(host.name), "TLSA")
        if answer is not None and answer.secure and answer.status is Status.OK:
            return True
    return False
