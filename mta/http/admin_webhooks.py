"""/api/v1/webhooks: the endpoints events are posted to (mta.webhooks), and this node's
failed batches.

    GET    /api/v1/webhooks                   {"endpoints": [...]} (never the secrets)
    POST   /api/v1/webhooks                   {url, tenant?, events?, description?} -> 201
                                              the endpoint with its secret (shown once)
    GET    /api/v1/webhooks/{id}              one endpoint
    DELETE /api/v1/webhooks/{id}              remove it and its waiting batches
    POST   /api/v1/webhooks/{id}/test         post a webhook_test event now; the answer
    POST   /api/v1/webhooks/{id}/enable       enable a disabled endpoint again
    GET    /api/v1/webhooks/failed?endpoint=  batches that failed for good (this node)
    POST   /api/v1/webhooks/replay            {endpoint?, webhook_ids?} -> {"replayed": n}

The admin token (or the local admin socket) manages every endpoint; a tenant's API key only
its own (tenant is then implied; endpoints of its sub-accounts are the operator's to add).
Without webhooks in this process every route answers 503 `webhooks_unavailable`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http.apidoc import ADMIN_OR_KEY as _ADMIN_OR_KEY
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import query as _query
from mta.http.callers import caller
from mta.http.errors import ApiError, json_object
from mta.http.shards import PEERS, ask_peers
from mta.webhooks import MAX_PER_TENANT, Endpoint, EndpointError

__all__ = ["OPENAPI_PATHS", "WEBHOOKS", "routes"]

routes = web.RouteTableDef()

WEBHOOKS: web.AppKey[Any] = web.AppKey("webhooks", object)


def _service(request: web.Request) -> Any:
    w = request.app.get(WEBHOOKS)
    if w is None:
        raise ApiError(503, "webhooks_unavailable", "webhooks are off in this process "
                       "([webhooks] enabled = false)")
    return w


async def _endpoint(request: web.Request, tenant: str | None) -> Endpoint:
    ep_id = request.match_info["id"]
    ep = await _service(request).endpoints.get(ep_id)
    # A tenant never learns whether another tenant's endpoint exists.
    if ep is None or (tenant is not None and ep.tenant != tenant):
        raise ApiError(404, "not_found", f"no webhook endpoint {ep_id!r}")
    return ep


@routes.get("/api/v1/webhooks")
async def webhooks_list(request: web.Request) -> web.Response:
    tenant = await caller(request)
    eps = await _service(request).endpoints.refresh(force=True)
    return web.json_response({"endpoints": [
        e.public() for e in sorted(eps.values(), key=lambda e: e.created_at)
        if tenant is None or e.tenant == tenant]})


@routes.post("/api/v1/webhooks")
async def webhooks_add(request: web.Request) -> web.Response:
    tenant = await caller(request)
    service = _service(request)
    doc = await json_object(request)
    unknown = set(doc) - {"url", "tenant", "events", "description"}
    if unknown:
        raise ApiError(400, "bad_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    owner = doc.get("tenant")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise ApiError(400, "bad_field", "tenant: must be a tenant name")
    if tenant is not None:
        if owner is not None and owner != tenant:
            raise ApiError(403, "forbidden", f"a key of tenant {tenant!r} may only add "
                           f"endpoints for {tenant!r}")
        owner = tenant
        mine = [e for e in (await service.endpoints.refresh(force=True)).values()
                if e.tenant == tenant]
        if len(mine) >= MAX_PER_TENANT:
            raise ApiError(409, "too_many_endpoints", f"tenant {tenant!r} has "
                           f"{len(mine)} endpoints, the most allowed")
    try:
        ep = await service.endpoints.add(
            doc.get("url"), tenant=owner, events=doc.get("events"),
            description=doc.get("description") or "", added_by_tenant=tenant is not None,
            allow_private=service.cfg.allow_private)
    except EndpointError as e:
        raise ApiError(400, "bad_field", str(e)) from None
    if service.events is not None:
        service.events.emit("webhook_added", endpoint=ep.id, tenant=ep.tenant, url=ep.url,
                            events=list(ep.events), by="tenant" if tenant else "operator")
    return web.json_response({**ep.public(), "secret": ep.secret}, status=201)


@routes.get("/api/v1/webhooks/failed")
async def webhooks_failed(request: web.Request) -> web.Response:
    tenant = await caller(request)
    service = _service(request)
    ep_id = request.query.get("endpoint")
    if tenant is not None:
        own = {e.id for e in service.endpoints.cached.values() if e.tenant == tenant}
        if ep_id is not None and ep_id not in own:
            raise ApiError(404, "not_found", f"no webhook endpoint {ep_id!r}")
    try:
        limit = min(10_000, max(1, int(request.query.get("limit", "100"))))
    except ValueError:
        raise ApiError(400, "bad_limit", "limit: must be a number") from None
    batches = [b.public() for b in await service.outbox.failed(ep_id, limit)]
    # With several workers each has its own outbox: worker 0 lists them all.
    for doc in await ask_peers(request.app.get(PEERS), "GET", "/api/v1/webhooks/failed",
                               {"endpoint": ep_id, "limit": limit}):
        batches += doc["failed"]
    batches.sort(key=lambda b: b["created_at"])
    if tenant is not None:
        batches = [b for b in batches if b["endpoint"] in own]
    return web.json_response({"failed": batches[:limit]})


@routes.post("/api/v1/webhooks/replay")
async def webhooks_replay(request: web.Request) -> web.Response:
    tenant = await caller(request)
    service = _service(request)
    doc = await json_object(request)
    ep_id = doc.get("endpoint")
    ids = doc.get("webhook_ids")
    if ids is not None and (not isinstance(ids, list) or
                            not all(isinstance(i, str) for i in ids)):
        raise ApiError(400, "bad_field", "webhook_ids: must be a list of webhook ids")
    if tenant is not None:
        own = [e.id for e in service.endpoints.cached.values() if e.tenant == tenant]
        if ep_id is None:
            total = sum([await _replay(request, service, e, ids) for e in own])
            return web.json_response({"replayed": total})
        if ep_id not in own:
            raise ApiError(404, "not_found", f"no webhook endpoint {ep_id!r}")
    return web.json_response({"replayed": await _replay(request, service, ep_id, ids)})


async def _replay(request: web.Request, service: Any, ep_id: str | None,
                  ids: list[str] | None) -> int:
    """Replay in this worker's outbox and, on worker 0 with several, in every other's."""
    n = int(await service.replay(ep_id, ids))
    for doc in await ask_peers(request.app.get(PEERS), "POST", "/api/v1/webhooks/replay",
                               body={"endpoint": ep_id, "webhook_ids": ids}):
        n += int(doc.get("replayed", 0))
    return n


@routes.get("/api/v1/webhooks/{id}")
async def webhooks_get(request: web.Request) -> web.Response:
    return web.json_response((await _endpoint(request, await caller(request))).public())


@routes.delete("/api/v1/webhooks/{id}")
async def webhooks_remove(request: web.Request) -> web.Response:
    tenant = await caller(request)
    service = _service(request)
    ep = await _endpoint(request, tenant)
    await service.endpoints.remove(ep.id)
    await service.outbox.drop_endpoint(ep.id)
    if service.events is not None:
        service.events.emit("webhook_removed", endpoint=ep.id, tenant=ep.tenant, url=ep.url)
    return web.json_response({"id": ep.id, "result": "removed"})


@routes.post("/api/v1/webhooks/{id}/test")
async def webhooks_test(request: web.Request) -> web.Response:
    ep = await _endpoint(request, await caller(request))
    r = await _service(request).test(ep)
    return web.json_response({"id": ep.id, "url": ep.url, "ok": r.ok, "status": r.status,
                              "error": r.error, "seconds": round(r.seconds, 3)})


@routes.post("/api/v1/webhooks/{id}/enable")
async def webhooks_enable(request: web.Request) -> web.Response:
    tenant = await caller(request)
    service = _service(request)
    ep = await _endpoint(request, tenant)
    ep = await service.endpoints.set_enabled(ep.id, True)
    await service.enabled(ep.id)
    return web.json_response(ep.public())


# The OpenAPI description of these routes (openapi.py puts the document together).
# /api/v1/webhooks (mta.http.admin_webhooks): the admin token manages every endpoint, a
# tenant's API key only its own.
_WEBHOOK = {"type": "object", "properties": {
    "id": {"type": "string"}, "url": {"type": "string"},
    "tenant": {"type": ["string", "null"], "description": "null: every tenant's events"},
    "events": {"type": "array", "items": {"type": "string"},
               "description": '["*"]: every event'},
    "enabled": {"type": "boolean"}, "disabled_reason": {"type": "string"},
    "created_at": {"type": "number"}, "description": {"type": "string"},
    "added_by_tenant": {"type": "boolean"}}}
_WEBHOOK_BATCH = {"type": "object", "properties": {
    "seq": {"type": "integer"}, "endpoint": {"type": "string"},
    "webhook_id": {"type": "string"}, "events": {"type": "integer"},
    "created_at": {"type": "number"}, "attempts": {"type": "integer"},
    "last_error": {"type": "string"}}}
_WEBHOOK_ERRORS = _errors(
    (400, "bad_field, bad_json, bad_limit"),
    (401, "unauthorized: neither the admin token nor a tenant's API key"),
    (403, "forbidden: a tenant's key adding another tenant's endpoint"),
    (404, "not_found: no such endpoint (or another tenant's)"),
    (503, "webhooks_unavailable: [webhooks] enabled = false"))


def _wop(summary: str, responses: dict[str, Any], **kw: Any) -> dict[str, Any]:
    op = _op(summary, responses | _WEBHOOK_ERRORS, admin=False, tag="webhooks", **kw)
    op["security"] = _ADMIN_OR_KEY
    return op


_EP_ID = [_path_param("id", "the endpoint id (ep_...)")]
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/webhooks": {
        "get": _wop("The endpoints (never their secrets)", _ok("Endpoints", {
            "type": "object", "properties": {
                "endpoints": {"type": "array", "items": _WEBHOOK}}})),
        "post": _wop("Add an endpoint; the reply holds its signing secret, once",
                     _ok("Added", {"allOf": [_WEBHOOK, {"type": "object", "properties": {
                         "secret": {"type": "string", "description": "whsec_..."}}}]},
                         "201") | _errors((409, "too_many_endpoints")),
                     body={"type": "object", "required": ["url"], "properties": {
                         "url": {"type": "string"}, "tenant": {"type": "string"},
                         "events": {"type": "array", "items": {"type": "string"}},
                         "description": {"type": "string"}}})},
    "/api/v1/webhooks/failed": {"get": _wop(
        "Batches that failed for good on this node", _ok("Failed batches", {
            "type": "object", "properties": {
                "failed": {"type": "array", "items": _WEBHOOK_BATCH}}}),
        params=[_query("endpoint", "one endpoint's", {"type": "string"}),
                _query("limit", "at most (default 100)", {"type": "integer"})])},
    "/api/v1/webhooks/replay": {"post": _wop(
        "Post failed batches again, with their webhook ids", _ok("Replayed", {
            "type": "object", "properties": {"replayed": {"type": "integer"}}}),
        body={"type": "object", "properties": {
            "endpoint": {"type": "string"},
            "webhook_ids": {"type": "array", "items": {"type": "string"}}}})},
    "/api/v1/webhooks/{id}": {
        "get": _wop("One endpoint", _ok("The endpoint", _WEBHOOK), params=_EP_ID),
        "delete": _wop("Remove an endpoint and its waiting batches", _ok("Removed"),
                       params=_EP_ID)},
    "/api/v1/webhooks/{id}/test": {"post": _wop(
        "Post a webhook_test event now, outside the outbox", _ok("The receiver's answer", {
            "type": "object", "properties": {
                "ok": {"type": "boolean"}, "status": {"type": "integer"},
                "error": {"type": "string"}, "seconds": {"type": "number"}}}),
        params=_EP_ID)},
    "/api/v1/webhooks/{id}/enable": {"post": _wop(
        "Enable a disabled endpoint again", _ok("The endpoint", _WEBHOOK), params=_EP_ID)},
}
