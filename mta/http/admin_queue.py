"""/api/v1/admin/queue: list, show, hold, release, delete, flush, bounce, stats, explain.

A thin layer: each route checks its input and calls one method of the `QueueOps` object the
daemon provides, so the CLI, scripts and the tests see the same behaviour.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from aiohttp import web

from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import query as _query
from mta.http.apidoc import ref as _ref
from mta.http.errors import ApiError
from mta.http.state import QUEUE_OPS

__all__ = ["OPENAPI_PATHS", "QueueOps", "routes"]

_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_STATES = ("queued", "held", "delivered", "bounced", "expired")


class QueueOps(Protocol):
    async def queue_list(self, state: str | None, limit: int, after: str | None, *,
                         tenant: str | None = None,
                         site: str | None = None) -> list[dict]: ...
    async def queue_show(self, msg_id: str) -> dict | None: ...
    async def queue_hold(self, msg_id: str) -> bool: ...
    async def queue_release(self, msg_id: str) -> bool: ...
    async def queue_delete(self, msg_id: str) -> bool: ...
    async def queue_bounce(self, msg_id: str) -> bool: ...
    async def queue_flush(self, msg_id: str | None) -> int: ...
    async def queue_stats(self) -> dict[str, Any]: ...
    async def queue_explain(self, msg_id: str) -> dict | None: ...
    async def queue_shape(self, edges: list[float], tenant: str | None) -> list[list]: ...


routes = web.RouteTableDef()


def _ops(request: web.Request) -> QueueOps:
    ops = request.app[QUEUE_OPS]
    if ops is None:
        raise ApiError(503, "queue_unavailable", "no queue in this process")
    return ops


def _msg_id(request: web.Request) -> str:
    msg_id = request.match_info["id"]
    if not _ID_RE.match(msg_id):
        raise ApiError(400, "bad_id", f"not a queue id: {msg_id!r}")
    return msg_id


def _not_found(msg_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no message {msg_id} in the queue")


@routes.get("/api/v1/admin/queue")
async def queue_list(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in _STATES:
        raise ApiError(400, "bad_state", f"state must be one of {', '.join(_STATES)}")
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "bad_limit", "limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise ApiError(400, "bad_limit", "limit must be between 1 and 10000")
    after = request.query.get("after") or None
    # Only one tenant's, only those with a recipient at one site ("site=" alone: those
    # not routed yet).
    tenant = request.query.get("tenant") or None
    site = request.query.get("site")
    messages = await _ops(request).queue_list(state, limit, after, tenant=tenant, site=site)
    return web.json_response({"messages": messages})


@routes.get("/api/v1/admin/queue-stats")
async def queue_stats(request: web.Request) -> web.Response:
    return web.json_response(await _ops(request).queue_stats())


@routes.get("/api/v1/admin/queue-shape")
async def queue_shape(request: web.Request) -> web.Response:
    """qshape's counts: ?edges=5,10,20 (minutes, rising; the default is Postfix qshape's
    doubling buckets) &tenant=X."""
    raw = request.query.get("edges", "5,10,20,40,80,160,320,640,1280")
    try:
        edges = [float(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise ApiError(400, "bad_edges", "edges: minutes separated by commas") from None
    if not edges or len(edges) > 32 or edges != sorted(set(edges)) or edges[0] <= 0:
        raise ApiError(400, "bad_edges", "edges: 1-32 rising positive minutes")
    rows = await _ops(request).queue_shape(edges, request.query.get("tenant"))
    return web.json_response({"edges": edges, "rows": rows})


@routes.post("/api/v1/admin/queue/flush")
async def queue_flush_all(request: web.Request) -> web.Response:
    n = await _ops(request).queue_flush(None)
    return web.json_response({"result": "flushed", "recipients": n})


@routes.get("/api/v1/admin/queue/{id}")
async def queue_show(request: web.Request) -> web.Response:
    msg_id = _msg_id(request)
    info = await _ops(request).queue_show(msg_id)
    if info is None:
        raise _not_found(msg_id)
    return web.json_response(info)


@routes.get("/api/v1/admin/queue/{id}/explain")
async def queue_explain(request: web.Request) -> web.Response:
    msg_id = _msg_id(request)
    info = await _ops(request).queue_explain(msg_id)
    if info is None:
        raise _not_found(msg_id)
    return web.json_response(info)


@routes.delete("/api/v1/admin/queue/{id}")
async def queue_delete(request: web.Request) -> web.Response:
    msg_id = _msg_id(request)
    if not await _ops(request).queue_delete(msg_id):
        raise _not_found(msg_id)
    return web.json_response({"id": msg_id, "result": "deleted"})


@routes.post("/api/v1/admin/queue/{id}/{action}")
async def queue_action(request: web.Request) -> web.Response:
    msg_id = _msg_id(request)
    action = request.match_info["action"]
    ops = _ops(request)
    if action == "flush":
        n = await ops.queue_flush(msg_id)
        if n < 0:
            raise _not_found(msg_id)
        return web.json_response({"id": msg_id, "result": "flushed", "recipients": n})
    method = {"hold": ops.queue_hold, "release": ops.queue_release,
              "bounce": ops.queue_bounce}.get(action)
    if method is None:
        raise ApiError(404, "not_found", f"no action {action!r}")
    if not await method(msg_id):
        raise _not_found(msg_id)
    past = {"hold": "held", "release": "released", "bounce": "bounced"}[action]
    return web.json_response({"id": msg_id, "result": past})


# The OpenAPI description of these routes (openapi.py puts the document together).
_QUEUE_ERRORS = _errors((400, "bad_id"), (404, "not_found"),
                        (503, "queue_unavailable"))

_ID = _path_param("id", "Queue id", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/queue": {"get": _op(
        "List queued messages, oldest first", _ok("Messages", {
            "type": "object", "properties": {"messages": {
                "type": "array", "items": _ref("Message")}}}) | _errors(
            (400, "bad_state, bad_limit"), (503, "queue_unavailable")),
        params=[_query("state", "Message state", {"type": "string", "enum": [
                    "queued", "held", "delivered", "bounced", "expired"]}),
                _query("limit", "At most this many", {"type": "integer", "minimum": 1,
                                                      "maximum": 10000, "default": 100}),
                _query("after", "Page after this id", {"type": "string"}),
                _query("tenant", "Only this tenant's messages", {"type": "string"}),
                _query("site", "Only messages with a recipient at this site (empty: not "
                       "routed yet)", {"type": "string"})])},
    "/api/v1/admin/queue-stats": {"get": _op(
        "Queue counts by state and site", _ok("Counts") | _errors(
            (503, "queue_unavailable")))},
    "/api/v1/admin/queue-shape": {"get": _op(
        "Queued recipients by site and age bucket (qshape), counted in the spool",
        _ok("{edges, rows: [site, held, bucket, recipients]}") | _errors(
            (400, "bad_edges"), (503, "queue_unavailable")),
        params=[{"name": "edges", "in": "query", "required": False,
                 "description": "Age bucket edges in minutes, rising, comma-separated",
                 "schema": {"type": "string"}},
                {"name": "tenant", "in": "query", "required": False,
                 "schema": {"type": "string"}}])},
    "/api/v1/admin/queue/flush": {"post": _op(
        "Retry every deferred recipient now", _ok("Flushed", _ref("ActionResult")) | _errors(
            (503, "queue_unavailable")))},
    "/api/v1/admin/queue/{id}": {
        "get": _op("Show one message", _ok("The message", _ref("Message")) | _QUEUE_ERRORS,
                   params=[_ID]),
        "delete": _op("Delete a message", _ok("Deleted", _ref("ActionResult"))
                      | _QUEUE_ERRORS, params=[_ID])},
    "/api/v1/admin/queue/{id}/explain": {"get": _op(
        "Why each recipient is where it is", _ok("Explanation") | _QUEUE_ERRORS,
        params=[_ID])},
    "/api/v1/admin/queue/{id}/{action}": {"post": _op(
        "Hold, release, bounce or flush one message",
        _ok("Done", _ref("ActionResult")) | _QUEUE_ERRORS,
        params=[_ID, _path_param("action", "What to do", {
            "type": "string", "enum": ["hold", "release", "bounce", "flush"]})])},
}
