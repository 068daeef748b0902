"""/api/v1/admin/keys: tenants' API keys for POST /api/v1/messages (what `mta keys` calls).

    GET    /api/v1/admin/keys?tenant=T        keys (of T): id, tenant, created, label, source
    POST   /api/v1/admin/keys                 {tenant, label?}: a new key; 201 with "key",
                                              shown this once (only its hash is stored)
    DELETE /api/v1/admin/keys/{tenant}/{id}   revoke: refused at once on every node

Run-time keys live in the policy store (mta.http.inject.ApiKeys): policy.db, or the
cluster's Redis, which every node reads at each request. Keys from the config
(`source: "config"`) are listed but revoked by editing the config and a SIGHUP (409).
Every change is an event: `key_created`, `key_revoked`.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.errors import ApiError, json_object

__all__ = ["routes"]

routes = web.RouteTableDef()

_TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_ID_RE = re.compile(r"^[0-9a-fA-F]{8,64}$")


def _keys(request: web.Request) -> Any:
    keys = request.app[state.API_KEYS]
    if keys.kv is None or request.app[state.POLICY_ADMIN] is None:
        raise ApiError(503, "policy_unavailable", "no policy store in this process")
    return keys


def _tenant(value: Any) -> str:
    if not isinstance(value, str) or not _TENANT_RE.match(value):
        raise ApiError(400, "bad_tenant", f"not a tenant name: {value!r}")
    return value


def emit(request: web.Request, event: str, **fields: Any) -> None:
    events = getattr(request.app[state.POLICY_ADMIN].engine, "events", None)
    if events is not None:
        events.emit(event, **fields)


async def require_tenant(request: web.Request, tenant: str) -> None:
    if await request.app[state.POLICY_ADMIN].engine.tenants.get(tenant) is None:
        raise ApiError(404, "not_found", f"no tenant {tenant!r}")


@routes.get("/api/v1/admin/keys")
async def keys_list(request: web.Request) -> web.Response:
    keys = _keys(request)
    tenant = request.query.get("tenant")
    return web.json_response(
        {"keys": await keys.records(_tenant(tenant) if tenant is not None else None)})


@routes.post("/api/v1/admin/keys")
async def keys_create(request: web.Request) -> web.Response:
    keys = _keys(request)
    doc = await json_object(request)
    tenant = _tenant(doc.get("tenant"))
    label = doc.get("label", "")
    if not isinstance(label, str) or len(label) > 200:
        raise ApiError(400, "bad_field", "label: a string of at most 200 characters")
    await require_tenant(request, tenant)
    key, rec = await keys.create(tenant, label)
    emit(request, "key_created", tenant=tenant, key_id=rec["id"], label=label or None)
    return web.json_response({**rec, "source": "runtime", "key": key}, status=201)


@routes.delete("/api/v1/admin/keys/{tenant}/{id}")
async def keys_revoke(request: web.Request) -> web.Response:
    keys = _keys(request)
    tenant = _tenant(request.match_info["tenant"])
    key_id = request.match_info["id"]
    if not _ID_RE.match(key_id):
        raise ApiError(400, "bad_id", "a key id is 8 to 64 hex digits (see mta keys list)")
    rec = await keys.revoke(tenant, key_id)
    if rec is None:
        if keys.in_config(tenant, key_id):
            raise ApiError(409, "config_key", "this key is in the config: remove it from "
                           f"[tenants.{tenant}] api_keys and reload (SIGHUP)")
        raise ApiError(404, "not_found", f"tenant {tenant!r} has no run-time key {key_id}")
    emit(request, "key_revoked", tenant=tenant, key_id=rec["id"])
    return web.json_response({"revoked": {**rec, "source": "runtime"}})
