"""The console's pages and actions. Each action is a POST from a form carrying the CSRF
token, reached through a confirmation page, done by the same queue operations, policy
admin and shaper calls as the admin JSON API, and answered with a redirect (303) to the
page that shows the result."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import re
import secrets
import shutil
import urllib.parse
from typing import Any

from aiohttp import web

from mta.config.reputation import STATES
from mta.console import data
from mta.console.feed import OUTCOMES, Filter
from mta.console.sessions import COOKIE
from mta.console.site import ACCOUNT, CONSOLE, FORM, SESSION, refuse
from mta.http import state
from mta.http.admin_reputation import REPUTATION
from mta.policy import PolicyError
from mta.policy.tenants import LIMIT_NAMES

__all__ = ["routes"]

routes = web.RouteTableDef()

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_QUEUE_ACTIONS = {"hold": "held", "release": "released", "delete": "deleted",
                  "flush": "flushed", "bounce": "bounced"}
_SIGNIN_COOKIE = "mta_console_signin"
_KEEPALIVE = 15.0


def _console(request: web.Request) -> Any:
    return request.app[CONSOLE]


def _render(request: web.Request, template: str, **ctx: Any) -> web.Response:
    return _console(request).render(request, template, **ctx)


def _scope(request: web.Request) -> str | None:
    """The tenant a portal account is confined to; None: an operator account sees all."""
    return request[ACCOUNT].tenant


def _may_act(request: web.Request) -> web.Response | None:
    if not request[ACCOUNT].can_act:
        return refuse(request, 403, f"Your account ({request[ACCOUNT].role}) may look, "
                      "not act.")
    return None


# --- sign-in ------------------------------------------------------------------------------

@routes.get("/sign-in")
async def sign_in_page(request: web.Request) -> web.Response:
    # Login CSRF: the form carries a token that must equal a cookie set with it (a page
    # elsewhere cannot read the cookie, so it cannot sign a browser into its account).
    token = secrets.token_urlsafe(24)
    resp = _render(request, "signin.html", signin_token=token, error=None)
    resp.set_cookie(_SIGNIN_COOKIE, token, path="/console/sign-in", httponly=True,
                    secure=_console(request).cfg.secure_cookie, samesite="Strict",
                    max_age=3600)
    return resp


@routes.post("/sign-in")
async def sign_in(request: web.Request) -> web.Response:
    console = _console(request)
    form = await request.post()
    token, cookie = str(form.get("csrf", "")), request.cookies.get(_SIGNIN_COOKIE, "")
    if not token or not secrets.compare_digest(token.encode(), cookie.encode()):
        return refuse(request, 403, "The sign-in form is stale (CSRF check failed). "
                      "Reload the page and try again.")
    name, password = str(form.get("user", ""))[:200], str(form.get("password", ""))[:1000]
    limit = console.sign_in_limit
    peer = request.remote or "?"
    held = []
    for principal in (f"ip:{peer}", f"user:{name}"):
        d = console.limiter.acquire(principal, limit)
        if not d.ok:
            for p in held:
                console.limiter.release(p)
            resp = _render(request, "signin.html", signin_token=token,
                           error=f"Too many sign-in attempts: try again in "
                                 f"{d.retry_after} s.")
            resp.set_status(429)
            resp.headers["Retry-After"] = str(d.retry_after)
            return resp
        held.append(principal)
    try:
        account = await console.accounts.check(name, password)
    finally:
        for p in held:
            console.limiter.release(p)
    if account is None:
        resp = _render(request, "signin.html", signin_token=token,
                       error="Wrong account name or password.")
        resp.set_status(401)
        return resp
    _, value = console.sessions.create(account.name, account.stamp)
    data.warm(request, account.tenant)  # the first pages' counts, while the browser follows
    resp = web.HTTPSeeOther("/console/")
    console.set_cookie(resp, value)
    resp.del_cookie(_SIGNIN_COOKIE, path="/console/sign-in")
    raise resp


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    _console(request).sessions.drop(request[SESSION].sid)
    resp = web.HTTPSeeOther("/console/sign-in")
    resp.del_cookie("mta_console", path="/console")
    raise resp


# --- overview -----------------------------------------------------------------------------

def _chart(series: list[dict[str, Any]], keys: tuple[str, ...], width: int = 600,
           height: int = 120) -> dict[str, Any]:
    """Polyline points per key for an inline SVG (no script, no library)."""
    top = max([1, *(p[k] for p in series for k in keys)])
    step = width / max(1, len(series) - 1)
    lines = {k: " ".join(f"{i * step:.1f},{height - p[k] * height / top:.1f}"
                         for i, p in enumerate(series)) for k in keys}
    return {"width": width, "height": height, "top": top, "lines": lines,
            "totals": {k: sum(p[k] for p in series) for k in keys}}


@routes.get("/")
async def overview(request: web.Request) -> web.Response:
    console = _console(request)
    tenant = _scope(request)
    ops = request.config_dict[state.QUEUE_OPS]
    stats, oldest, counted, shape = None, None, 0.0, None
    if tenant is None and ops is not None:
        stats, counted = await data.queue_stats(request)
        oldest = stats["oldest"] if stats else None
    elif ops is not None:
        # A tenant's share, counted like its Queue page's table (exact at any size).
        shape = await data.qshape(request, tenant)
        counted = shape["age"]
    key = tenant or ""
    series = console.feed.per_minute(("received", "delivered"), key)
    outcomes = console.feed.last_hour(OUTCOMES, key)
    lic = await data.licence(request) if tenant is None else None
    alerts = await _alerts(request, lic) if tenant is None else []
    detail = await data.tenant_detail(request, tenant) if tenant else None
    return _render(request, "overview.html", page="overview", stats=stats, oldest=oldest,
                   shape=shape, counted=counted,
                   chart=_chart(series, ("received", "delivered")), outcomes=outcomes,
                   licence=lic, alerts=alerts, tenant=detail,
                   refresh=_console(request).cfg.overview_refresh)


async def _alerts(request: web.Request, lic: dict[str, Any] | None) -> list[str]:
    out = []
    if lic and lic["volume"]:
        if lic["ratio"] >= 1:
            out.append(f"Licence volume used up: {lic['used']:,} of {lic['volume']:,}.")
        elif lic["ratio"] >= 0.8:
            out.append(f"Licence at {lic['ratio'] * 100:.0f}%: {lic['used']:,} of "
                       f"{lic['volume']:,}.")
    if lic and lic["problem"]:
        out.append(f"Licence: {lic['problem']}")
    shaper = request.config_dict[state.SHAPER]
    if shaper is not None:
        for s in shaper.suspensions.active():
            out.append(f"Delivery suspended for {s.scope} {s.name}: {s.reason}")
        for name in sorted(shaper.egress.shifted):
            out.append(f"Egress source {name} is listed on a blocklist and avoided.")
    spool = _console(request).spool_dir
    if spool is not None:
        with contextlib.suppress(OSError):
            du = await asyncio.to_thread(shutil.disk_usage, spool)
            if du.free < du.total * _console(request).cfg.disk_alert_free:
                out.append(f"Spool disk {du.free * 100 // du.total}% free "
                           f"({du.free // 2**20:,} MiB of {du.total // 2**20:,} MiB).")
    guard = request.config_dict.get(REPUTATION)
    for name, st in sorted((guard.states if guard is not None else {}).items()):
        if st.name != "ok":
            out.append(f"Tenant {name}: reputation {st.name}.")
    return out


# --- queue --------------------------------------------------------------------------------

def _page_number(request: web.Request, key: str) -> int:
    try:
        return max(0, int(request.query.get(key, "0")))
    except ValueError:
        return 0


@routes.get("/queue")
async def queue_page(request: web.Request) -> web.Response:
    q = request.query
    site = q.get("site", "")[:255]
    shown_state = "held" if q.get("state") == "held" else "queued"
    after = q.get("after", "")
    after = after if _ID_RE.match(after) else None
    listing = await data.queued_messages(request, _scope(request), state=shown_state,
                                         after=after, site=site)
    shape = await data.qshape(request, _scope(request))
    per = data.SITES_PER_PAGE
    sites_page = min(_page_number(request, "sites"), max(0, (len(shape["rows"]) - 1) // per))
    rows = shape["rows"][sites_page * per:(sites_page + 1) * per]
    here = {"site": site, "state": shown_state} if site else {"state": shown_state}
    other_state = "queued" if shown_state == "held" else "held"
    return _render(request, "queue.html", page="queue", shape=shape, rows=rows,
                   sites_from=sites_page * per + 1, sites_to=sites_page * per + len(rows),
                   other_state=other_state,
                   other_query=urllib.parse.urlencode({**here, "state": other_state}),
                   sites_page=sites_page, sites_pages=max(1, -(-len(shape["rows"]) // per)),
                   site=site, shown_state=shown_state, listing=listing,
                   messages=listing["messages"], first_page=after is None,
                   next_query=urllib.parse.urlencode({**here, "after": listing["next"]})
                   if listing["next"] else "", here_query=urllib.parse.urlencode(here),
                   done=request.query.get("done", ""))


async def _message(request: web.Request) -> dict[str, Any] | web.Response:
    msg_id = request.match_info["id"]
    ops = request.config_dict[state.QUEUE_OPS]
    info = await ops.queue_show(msg_id) if ops is not None and _ID_RE.match(msg_id) else None
    tenant = _scope(request)
    if info is None or (tenant is not None and info["tenant"] != tenant):
        return refuse(request, 404, f"No message {msg_id} in the queue.")
    return info


@routes.get("/queue/{id}")
async def message_page(request: web.Request) -> web.Response:
    info = await _message(request)
    if isinstance(info, web.Response):
        return info
    explain = None
    if _scope(request) is None:
        with contextlib.suppress(Exception):  # an explanation is a help, not a must
            explain = await request.config_dict[state.QUEUE_OPS].queue_explain(info["id"])
    return _render(request, "message.html", page="queue", m=info, explain=explain,
                   done=request.query.get("done", ""))


@routes.get("/queue/{id}/{action}")
async def message_confirm(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in _QUEUE_ACTIONS:
        return refuse(request, 404, f"No action {action!r}.")
    info = await _message(request)
    if isinstance(info, web.Response):
        return info
    return (_may_act(request) or
            _render(request, "confirm.html", page="queue", action=action,
                    what=f"message {info['id']} ({len(info['recipients'])} recipient(s), "
                         f"from {info['mail_from'] or '<>'})",
                    post=f"/console/queue/{info['id']}/{action}",
                    back=f"/console/queue/{info['id']}"))


@routes.post("/queue/{id}/{action}")
async def message_action(request: web.Request) -> web.Response:
    action = request.match_info["action"]
    if action not in _QUEUE_ACTIONS:
        return refuse(request, 404, f"No action {action!r}.")
    refused = _may_act(request)
    if refused:
        return refused
    info = await _message(request)
    if isinstance(info, web.Response):
        return info
    ops = request.config_dict[state.QUEUE_OPS]
    msg_id = info["id"]
    if action == "flush":
        ok = await ops.queue_flush(msg_id) >= 0
    else:
        ok = await {"hold": ops.queue_hold, "release": ops.queue_release,
                    "delete": ops.queue_delete, "bounce": ops.queue_bounce}[action](msg_id)
    _console(request).snapshots.clear()  # the next page counts the queue afresh
    if not ok:
        return refuse(request, 409, f"Message {msg_id} could not be {_QUEUE_ACTIONS[action]}"
                      " (its state changed meanwhile).")
    if action == "delete":
        raise web.HTTPSeeOther(f"/console/queue?done=deleted+{msg_id}")
    raise web.HTTPSeeOther(f"/console/queue/{msg_id}?done={_QUEUE_ACTIONS[action]}")


@routes.get("/queue-flush")
async def flush_confirm(request: web.Request) -> web.Response:
    return (_may_act(request) or
            _render(request, "confirm.html", page="queue", action="flush",
                    what="every queued message (retry now, waiting times are dropped)",
                    post="/console/queue-flush", back="/console/queue"))


@routes.post("/queue-flush")
async def flush_all(request: web.Request) -> web.Response:
    refused = _may_act(request)
    if refused:
        return refused
    n = await request.config_dict[state.QUEUE_OPS].queue_flush(None)
    _console(request).snapshots.clear()
    raise web.HTTPSeeOther(f"/console/queue?done=flushed+{n}+recipients")


# --- tenants ------------------------------------------------------------------------------

@routes.get("/tenants")
async def tenants_page(request: web.Request) -> web.Response:
    try:
        page = max(0, int(request.query.get("page", "0")))
    except ValueError:
        page = 0
    rows, total = await data.tenants(request, _scope(request), page)
    pages = max(1, -(-total // data.TENANTS_PER_PAGE))
    return _render(request, "tenants.html", page="tenants", tenants=rows, total=total,
                   number=page, pages=pages)


async def _tenant(request: web.Request) -> dict[str, Any] | web.Response:
    name = request.match_info["name"]
    scope = _scope(request)
    detail = (await data.tenant_detail(request, name)
              if _NAME_RE.match(name) and scope in (None, name) else None)
    if detail is None:
        return refuse(request, 404, f"No tenant {name}.")
    return detail


@routes.get("/tenants/{name}")
async def tenant_page(request: web.Request) -> web.Response:
    detail = await _tenant(request)
    if isinstance(detail, web.Response):
        return detail
    return _render(request, "tenant.html", page="tenants", t=detail,
                   done=request.query.get("done", ""))


_TENANT_ACTIONS = "suspend|unsuspend|credits|escalate|clear|limit|unlimit"
# What each tenant action asks on its confirmation page, beside the CSRF token.
_TENANT_FIELDS: dict[str, list[dict[str, Any]]] = {
    "suspend": [{"name": "reason", "label": "Reason", "type": "text"}],
    "unsuspend": [],
    "credits": [{"name": "amount", "label": "Credits", "type": "number"},
                {"name": "paid", "label": "Paid", "type": "checkbox"}],
    "escalate": [{"name": "to", "label": "State", "type": "select",
                  "options": list(STATES[1:])},
                 {"name": "reason", "label": "Reason", "type": "text"}],
    "clear": [{"name": "reason", "label": "Reason", "type": "text"}],
    "limit": [{"name": "limit", "label": "Limit", "type": "select",
               "options": list(LIMIT_NAMES)},
              {"name": "value", "label": "Messages", "type": "number", "min": 0},
              {"name": "until", "label": "Until (date)", "type": "date"},
              {"name": "reason", "label": "Reason", "type": "text"}],
    "unlimit": [],
}
_TENANT_WHAT = {"suspend": "all mail of tenant {}", "unsuspend": "the suspensions of tenant {}",
                "credits": "credits to tenant {}", "escalate": "tenant {}'s reputation state",
                "clear": "tenant {}'s reputation back to ok",
                "limit": "a temporary sending limit on tenant {}",
                "unlimit": "the temporary sending limits of tenant {}"}


@routes.get("/tenants/{name}/{action:" + _TENANT_ACTIONS + "}")
async def tenant_confirm(request: web.Request) -> web.Response:
    detail = await _tenant(request)
    if isinstance(detail, web.Response):
        return detail
    action = request.match_info["action"]
    return (_may_act(request) or
            _render(request, "confirm.html", page="tenants", action=action,
                    what=_TENANT_WHAT[action].format(detail["name"]),
                    post=f"/console/tenants/{detail['name']}/{action}",
                    back=f"/console/tenants/{detail['name']}",
                    fields=_TENANT_FIELDS[action]))


@routes.post("/tenants/{name}/{action:" + _TENANT_ACTIONS + "}")
async def tenant_action(request: web.Request) -> web.Response:
    """The CLI's tenant actions (`mta policy suspend|unsuspend|credits add|escalate|clear`),
    through the same PolicyAdmin and reputation guard the admin API calls."""
    refused = _may_act(request)
    if refused:
        return refused
    detail = await _tenant(request)
    if isinstance(detail, web.Response):
        return detail
    admin = request.config_dict[state.POLICY_ADMIN]
    name, action, form = detail["name"], request.match_info["action"], request[FORM]
    reason = str(form.get("reason", "")).strip()[:500]
    try:
        if action == "suspend":
            await admin.suspend(name, f"console: {reason or 'by the operator'}")
            done = "suspended"
        elif action == "unsuspend":
            done = f"lifted+{await admin.unsuspend(name)}+suspension(s)"
        elif action == "limit":
            until = datetime.date.fromisoformat(str(form.get("until", "")).strip())
            value = int(str(form.get("value", "")).strip())
            await admin.set_limit(name, str(form.get("limit", "")), value, until=until,
                                  reason=f"console: {reason or 'by the operator'}")
            done = "limit+set"
        elif action == "unlimit":
            done = f"cleared+{await admin.clear_limit(name)}+limit(s)"
        elif action == "credits":
            amount = int(str(form.get("amount", "")).strip() or "0")
            await admin.add_credits(name, amount, paid=form.get("paid") == "on",
                                    note="console")
            done = f"added+{amount}+credits"
        else:
            guard = request.config_dict.get(REPUTATION)
            if guard is None:
                return refuse(request, 409, "The reputation guard is off ([reputation]).")
            if action == "escalate":
                st = await guard.escalate(name, str(form.get("to", "")), f"console: {reason}"
                                          if reason else "")
            else:
                st = await guard.clear(name, f"console: {reason}" if reason else "")
            done = f"reputation+{st.name}"
    except (PolicyError, ValueError) as e:  # ReputationError is a ValueError, as is int("x")
        return refuse(request, 400, f"Not done: {e}")
    raise web.HTTPSeeOther(f"/console/tenants/{name}?done={done}")


# --- delivery paths -----------------------------------------------------------------------

@routes.get("/paths")
async def paths_page(request: web.Request) -> web.Response:
    if _scope(request) is not None:
        return refuse(request, 403, "Delivery paths are the operator's, not a tenant's.")
    return _render(request, "paths.html", page="paths", **await data.paths(request))


# --- events -------------------------------------------------------------------------------

def _filter(request: web.Request) -> Filter:
    q = request.query
    return Filter(tenant=_scope(request) or q.get("tenant", "")[:64],
                  recipient=q.get("recipient", "")[:254], id=q.get("id", "")[:64],
                  event=q.get("event", "")[:32])


@routes.get("/events")
async def events_page(request: web.Request) -> web.Response:
    f = _filter(request)
    rows = list(reversed(_console(request).feed.tail(f)))
    return _render(request, "events.html", page="events", f=f, rows=rows,
                   event_types=("received", "delivered", "deferred", "bounced", "expired",
                                "rejected", "suppressed"))


async def _still_signed_in(request: web.Request) -> bool:
    console = _console(request)
    session = console.sessions.get(request.cookies.get(COOKIE), touch=False)
    if session is None:
        return False
    account = await console.accounts.get(session.account)
    return account is not None and account.stamp == session.stamp


@routes.get("/events/stream")
async def events_stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: each matching event as one `data:` line of JSON."""
    console = _console(request)
    f = _filter(request)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-store",
                                       "X-Content-Type-Options": "nosniff"})
    await resp.prepare(request)
    q = console.feed.subscribe()
    closing = asyncio.ensure_future(console.closing.wait())
    try:
        await resp.write(b": live\n\n")
        while not console.closing.is_set():
            getter = asyncio.ensure_future(q.get())
            done, _ = await asyncio.wait({getter, closing}, timeout=_KEEPALIVE,
                                         return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if not await _still_signed_in(request):
                    break  # signed out, or the account removed, disabled, new password
                if not console.closing.is_set():
                    await resp.write(b": keep-alive\n\n")
                continue
            record = getter.result()
            if f.match(record):
                line = json.dumps(record, separators=(",", ":"), default=str)
                await resp.write(f"data: {line}\n\n".encode())
    except ConnectionResetError:  # the browser went away
        pass
    finally:
        closing.cancel()
        console.feed.unsubscribe(q)
    return resp

