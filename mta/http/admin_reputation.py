"""/api/v1/admin/tenants/{name}/reputation: a tenant's place on the escalation ladder
(mta.reputation), the figures behind it, and moving it by hand.

    GET  .../reputation          {tenant, state, since, reason, manual, figures_reach, why,
                                  figures: [per window], history: [moves]}
    POST .../reputation          {"state": "limited" | ... | "terminated", "reason": "..."}
                                 a state set by hand stays until cleared
    POST .../reputation/clear    {"reason": "..."}: back to ok, counts start afresh
    POST .../reputation/thresholds  {"set": {"complaint": [0.001, ...] | "0.001,...",
                                  "min_sample": 50, ...}, "unset": ["key" | "all"]}: the
                                 tenant's run-time override (shared by every node through
                                 the policy store); answers as GET, whose "thresholds" says
                                 each value in effect and where it came from

Admin token (or the local socket). Without the guard ([reputation] enabled = false): 503
`reputation_unavailable`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http.errors import ApiError, json_object
from mta.reputation import ReputationError

__all__ = ["REPUTATION", "routes"]

routes = web.RouteTableDef()

REPUTATION: web.AppKey[Any] = web.AppKey("reputation", object)


def _guard(request: web.Request) -> Any:
    g = request.app.get(REPUTATION)
    if g is None:
        raise ApiError(503, "reputation_unavailable", "the reputation guard is off "
                       "([reputation] enabled = false)")
    return g


def _state(s: Any) -> dict[str, Any]:
    return {"state": s.name, "since": s.since, "reason": s.reason, "manual": s.manual}


@routes.get("/api/v1/admin/tenants/{name}/reputation")
async def reputation_show(request: web.Request) -> web.Response:
    try:
        return web.json_response(await _guard(request).show(request.match_info["name"]))
    except ReputationError as e:
        raise ApiError(404, "unknown_tenant", str(e)) from None


@routes.post("/api/v1/admin/tenants/{name}/reputation")
async def reputation_escalate(request: web.Request) -> web.Response:
    doc = await json_object(request)
    state, reason = doc.get("state"), doc.get("reason")
    if not isinstance(state, str) or not isinstance(reason, str):
        raise ApiError(400, "bad_field", "state and reason: strings are required")
    try:
        s = await _guard(request).escalate(request.match_info["name"], state, reason)
    except ReputationError as e:
        code = 404 if "unknown tenant" in str(e) else 400
        raise ApiError(code, "unknown_tenant" if code == 404 else "bad_field", str(e)) from None
    return web.json_response({"tenant": request.match_info["name"], **_state(s)})


@routes.post("/api/v1/admin/tenants/{name}/reputation/clear")
async def reputation_clear(request: web.Request) -> web.Response:
    doc = await json_object(request)
    reason = doc.get("reason")
    if not isinstance(reason, str):
        raise ApiError(400, "bad_field", "reason: a string is required")
    try:
        s = await _guard(request).clear(request.match_info["name"], reason)
    except ReputationError as e:
        code = 404 if "unknown tenant" in str(e) else 400
        raise ApiError(code, "unknown_tenant" if code == 404 else "bad_field", str(e)) from None
    return web.json_response({"tenant": request.match_info["name"], **_state(s)})


@routes.post("/api/v1/admin/tenants/{name}/reputation/thresholds")
async def reputation_thresholds(request: web.Request) -> web.Response:
    doc = await json_object(request)
    changes, unset = doc.get("set", {}), doc.get("unset", [])
    if not isinstance(changes, dict) or not isinstance(unset, list) or not all(
            isinstance(k, str) for k in unset):
        raise ApiError(400, "bad_field", "set: an object of key -> value; unset: a list of "
                       "keys")
    unknown = set(doc) - {"set", "unset"}
    if unknown:
        raise ApiError(400, "bad_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    try:
        r = await _guard(request).set_thresholds(request.match_info["name"], changes, unset)
    except ReputationError as e:
        code = 404 if "unknown tenant" in str(e) else 400
        raise ApiError(code, "unknown_tenant" if code == 404 else "bad_field", str(e)) from None
    return web.json_response(r)
