"""/api/v1/admin/intake and /readyz: the intake switch (mta.smtp.intake) over HTTP.

    GET  /api/v1/admin/intake      {"accepting", "since", "reason"}
    POST /api/v1/admin/intake      {"accepting": false, "reason": "..."} -> the new state
                                   (`mta drain`); {"accepting": true} (`mta intake resume`)
    GET  /readyz                   200 {"ready": true} while intake is on; 503 with
                                   {"ready": false, "reason": ...} while draining, so a
                                   load balancer sends new mail elsewhere (no token needed)

While intake is off, `intake_middleware` answers POST /api/v1/messages with 503
`not_accepting` (and Retry-After) before the injection handler runs; SMTP refuses in
mta.smtp. Without an intake switch in this process the admin routes answer 503
`intake_unavailable` and /readyz is ready.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http import shards
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.errors import ApiError, json_error, json_object

__all__ = ["INTAKE", "OPENAPI_PATHS", "intake_middleware", "routes"]

routes = web.RouteTableDef()

INTAKE: web.AppKey[Any] = web.AppKey("intake", object)  # mta.smtp.intake.Intake | None
EVENTS: web.AppKey[Any] = web.AppKey("intake_events", object)  # observe.EventLog | None

# What HTTP injection is (mta.http.inject); refused while draining.
_INJECT_PATHS = frozenset({"/api/v1/messages"})
_MAX_REASON = 500
# A client told 503 may come back after this long (RFC 9110 10.2.3).
_RETRY_AFTER = "300"


def _intake(request: web.Request) -> Any:
    intake = request.app[INTAKE]
    if intake is None:
        raise ApiError(503, "intake_unavailable", "no intake switch in this process")
    return intake


@routes.get("/api/v1/admin/intake")
async def intake_status(request: web.Request) -> web.Response:
    return web.json_response(_intake(request).as_dict())


@routes.post("/api/v1/admin/intake")
async def intake_set(request: web.Request) -> web.Response:
    intake = _intake(request)
    doc = await json_object(request)
    accepting = doc.get("accepting")
    if not isinstance(accepting, bool):
        raise ApiError(400, "bad_accepting", "accepting must be true or false")
    reason = doc.get("reason", "")
    if not isinstance(reason, str) or len(reason) > _MAX_REASON or "\n" in reason:
        raise ApiError(400, "bad_reason", f"reason: one line of at most {_MAX_REASON} "
                                          "characters")
    if intake.set(accepting, reason):
        events = request.app[EVENTS]
        if events is not None:
            events.emit("intake", accepting=accepting, reason=intake.reason or None)
    peers = request.app.get(shards.PEERS)
    if peers:  # [server] workers > 1: every worker drains (mta.http.shards)
        await shards.forward(peers, "POST", "/api/v1/admin/intake",
                             {"accepting": accepting, "reason": reason})
    return web.json_response(intake.as_dict())


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    intake = request.app.get(INTAKE)
    if intake is not None and not intake.accepting:
        reason = "intake paused (draining)" + (f": {intake.reason}" if intake.reason else "")
        return web.json_response({"ready": False, "accepting": False, "reason": reason},
                                 status=503)
    return web.json_response({"ready": True, "accepting": True})


@web.middleware
async def intake_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    intake = request.app.get(INTAKE)
    if (intake is not None and not intake.accepting and request.method == "POST"
            and request.path in _INJECT_PATHS):
        return json_error(503, "not_accepting",
                          "this server is not accepting new messages (draining); try "
                          "again later or elsewhere",
                          headers={"Retry-After": _RETRY_AFTER})
    return await handler(request)


# The OpenAPI description of these routes (openapi.py puts the document together).
# /api/v1/admin/intake and /readyz (mta.http.admin_intake): `mta drain`.
_INTAKE_STATE = {"type": "object", "properties": {
    "accepting": {"type": "boolean"}, "since": {"type": "number",
                                                "description": "unix time of the switch"},
    "reason": {"type": "string"}}}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/intake": {
        "get": _op("Whether new mail is accepted", _ok("Intake state", _INTAKE_STATE)
                   | _errors((503, "intake_unavailable")), tag="operations"),
        "post": _op("Drain (accepting false: SMTP 421 4.3.2, injection 503, delivery goes "
                    "on) or resume", _ok("The new state", _INTAKE_STATE)
                    | _errors((400, "bad_accepting, bad_reason"),
                              (503, "intake_unavailable")),
                    body={"type": "object", "required": ["accepting"], "properties": {
                        "accepting": {"type": "boolean"},
                        "reason": {"type": "string", "maxLength": 500}}},
                    tag="operations")},
    "/readyz": {"get": _op(
        "Readiness: 503 while intake is paused (draining)",
        _ok("Ready", {"type": "object", "properties": {
            "ready": {"type": "boolean"}, "accepting": {"type": "boolean"},
            "reason": {"type": "string"}}}) | _errors((503, "not ready: draining")),
        admin=False, tag="observability")},
}
