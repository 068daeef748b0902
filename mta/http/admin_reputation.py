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

from mta.http.apidoc import TENANT as _TENANT
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.errors import ApiError, json_object
from mta.reputation import ReputationError

__all__ = ["OPENAPI_PATHS", "REPUTATION", "routes"]

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


# The OpenAPI description of these routes (openapi.py puts the document together).
_REP_STATES = ["ok", "warned", "limited", "suspended_class", "suspended", "terminated"]
_REP_ERRORS = _errors((400, "bad_field, bad_json"), (404, "unknown_tenant"),
                      (503, "reputation_unavailable"))
_REP_STATE = {"type": "object", "properties": {
    "tenant": {"type": "string"}, "state": {"type": "string", "enum": _REP_STATES},
    "since": {"type": "number"}, "reason": {"type": "string"},
    "manual": {"type": "boolean", "description": "set by hand: stays until cleared"}}}
_REP_THRESHOLDS = {"type": "object", "description": "each key in effect ({value, source}): "
                   "hard_bounce, complaint, spam_block, min_sample, limited_per_hour, "
                   "suspend_class, exempt; source: \"[reputation]\", "
                   "\"[reputation.plans.P]\", \"[reputation.tenants.T]\", "
                   "\"run-time override of T\""}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/tenants/{name}/reputation": {
        "get": _op("The tenant's escalation state, the figures per window and its moves",
                   _ok("Reputation", {"type": "object", "properties": {
                       **_REP_STATE["properties"],
                       "figures_reach": {"type": "string", "enum": _REP_STATES},
                       "why": {"type": "string"},
                       "figures": {"type": "array", "items": {"type": "object"}},
                       "history": {"type": "array", "items": {"type": "object"}},
                       "thresholds": _REP_THRESHOLDS}})
                   | _REP_ERRORS, params=[_TENANT], tag="policy"),
        "post": _op("Move the tenant to a state by hand (it stays until cleared)",
                    _ok("The new state", _REP_STATE) | _REP_ERRORS, params=[_TENANT],
                    tag="policy", body={"type": "object", "required": ["state", "reason"],
                                        "properties": {
                                            "state": {"type": "string",
                                                      "enum": _REP_STATES[1:]},
                                            "reason": {"type": "string"}}})},
    "/api/v1/admin/tenants/{name}/reputation/clear": {"post": _op(
        "Back to ok; counts from before now no longer count", _ok("The new state", _REP_STATE)
        | _REP_ERRORS, params=[_TENANT], tag="policy", body={
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string"}}})},
    "/api/v1/admin/tenants/{name}/reputation/thresholds": {"post": _op(
        "Set or drop keys of the tenant's run-time thresholds (evaluated at the next "
        "interval)", _ok("As GET .../reputation") | _REP_ERRORS, params=[_TENANT],
        tag="policy", body={"type": "object", "properties": {
            "set": {"type": "object", "description": "key -> value: a list of four "
                    "fractions (or \"0.001,0.002,0.003,0.005\"), a number, a class, a "
                    "boolean"},
            "unset": {"type": "array", "items": {"type": "string"},
                      "description": "keys to drop, or \"all\""}}})},
}
