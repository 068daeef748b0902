"""/api/v1/admin/gdpr: what mta holds about one address, and its erasure (mta.gdpr).

    POST /api/v1/admin/gdpr/export  {"address": A}  -> everything about A, per worker
    POST /api/v1/admin/gdpr/erase   {"address": A}  -> what was removed, per worker

POST, with the address in the body: an address in a URL ends up in proxies' logs. Admin
token (or the local admin socket) only. With `[server] workers` > 1 worker 0 asks every
other worker over its admin socket and lists each one's answer: each holds its own spool,
events file and policy state. Without the service: 503 `gdpr_unavailable`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.gdpr.match import normalise
from mta.http import shards
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.errors import ApiError, json_object

__all__ = ["GDPR", "OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()

GDPR: web.AppKey[Any] = web.AppKey("gdpr", object)


async def _address(request: web.Request) -> str:
    doc = await json_object(request)
    unknown = set(doc) - {"address"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    address = doc.get("address")
    if not isinstance(address, str) or not address.strip():
        raise ApiError(400, "missing_field", "address is required")
    try:
        return normalise(address)
    except ValueError as e:
        raise ApiError(400, "bad_address", str(e)) from None


async def _every_worker(request: web.Request, action: str) -> web.Response:
    gdpr = request.app.get(GDPR)
    if gdpr is None:
        raise ApiError(503, "gdpr_unavailable", "no gdpr service in this process")
    address = await _address(request)
    local = await (gdpr.export(address) if action == "export" else gdpr.erase(address))
    workers = [local]
    for i, path in sorted((request.app.get(shards.PEERS) or {}).items()):
        status, doc = await shards._Peer(path).call(
            "POST", f"/api/v1/admin/gdpr/{action}", body={"address": address})
        if status != 200:
            raise ApiError(502, "worker_failed", f"worker {i} answered {status} to {action}")
        workers += doc["workers"]  # its own answer: itself alone (it has no peers)
    return web.json_response({"address": address, "workers": workers})


@routes.post("/api/v1/admin/gdpr/export")
async def gdpr_export(request: web.Request) -> web.Response:
    return await _every_worker(request, "export")


@routes.post("/api/v1/admin/gdpr/erase")
async def gdpr_erase(request: web.Request) -> web.Response:
    return await _every_worker(request, "erase")


# The OpenAPI description of these routes (openapi.py puts the document together).
# /api/v1/admin/gdpr (mta.http.admin_gdpr): export and erasure of one address, admin only.
_GDPR_BODY = {"type": "object", "required": ["address"], "properties": {
    "address": {"type": "string", "description": "the address, any case"}}}
_GDPR_ERRORS = _errors((400, "bad_json, bad_request, missing_field, unknown_field, "
                             "bad_address"),
                       (502, "worker_failed: another worker did not answer"),
                       (503, "gdpr_unavailable: no gdpr service in this process"))
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/gdpr/export": {"post": _op(
        "Everything mta holds about an address: queued messages (as sender, recipient or "
        "named in a body), events (rotated files too), async reports, suppression entries, "
        "unique-recipient counts and ledger rows, webhook batches; one object per worker",
        _ok("The data, per worker", {"type": "object", "properties": {
            "address": {"type": "string"},
            "workers": {"type": "array", "items": {"type": "object", "properties": {
                "shard": {"type": "integer"}, "queue": {"type": "array"},
                "events": {"type": "array"}, "reports": {"type": "array"},
                "suppressions": {"type": "array"}, "policy": {"type": "object"},
                "webhooks": {"type": "array"}}}}}}) | _GDPR_ERRORS, body=_GDPR_BODY)},
    "/api/v1/admin/gdpr/erase": {"post": _op(
        "Erase an address everywhere (spool, events files, policy state, webhook outbox; "
        "SQLite files vacuumed); its suppression entries are kept as a keyed hash "
        "(`token`), so mail to it is still refused", _ok("What was removed, per worker", {
            "type": "object", "properties": {
                "address": {"type": "string"},
                "workers": {"type": "array", "items": {"type": "object", "properties": {
                    "shard": {"type": "integer"}, "token": {"type": "string"},
                    "queue": {"type": "object"}, "events": {"type": "object"},
                    "suppressions": {"type": "object"}, "policy": {"type": "object"},
                    "webhooks": {"type": "object"}}}}}}) | _GDPR_ERRORS, body=_GDPR_BODY)},
}
