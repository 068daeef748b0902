"""/api/v1/admin/keys: tenants' API keys for POST /api/v1/messages (what `mta keys` calls).

    GET    /api/v1/admin/keys?tenant=T        keys (of T): id, tenant, created, label, source
    POST   /api/v1/admin/keys                 {tenant, label?}: a new key; 201 with "key",
                                              shown this once (only its hash is stored)
    DELETE /api/v1/admin/keys/{tenant}/{id}   revoke: refused at once on every node

Run-time keys live in the policy store (mta.http.inject.ApiKeys): policy.db, or the
cluster's Redis, which every node reads at each request. Keys from the config
(`source: "config"`) are listed but revoked by editing the config and a SIGHUP (409).
Every change is an event: `key_created`, `key_revoked`.

The SMTP AUTH users made at run time (`mta users`) are below, under /api/v1/admin/users:
the same store, the same "at once on every node", events `user_*`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import time
from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import query as _query
from mta.http.errors import ApiError, json_object

__all__ = ["OPENAPI_PATHS", "routes"]

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


# --- SMTP AUTH users made at run time -------------------------------------------------------
#
#     GET    /api/v1/admin/users                    run-time and config users (no hashes)
#     POST   /api/v1/admin/users                    {name, tenant, password_hash | password,
#                                                    networks?}: 201; event user_added
#     PUT    /api/v1/admin/users/{name}/password    {password_hash | password}; user_passwd
#     POST   /api/v1/admin/users/{name}/disable     refused at its next AUTH; user_disabled
#     POST   /api/v1/admin/users/{name}/enable      user_enabled
#     DELETE /api/v1/admin/users/{name}             user_removed
#
# `mta users` hashes the password itself (scrypt, mta.smtp.auth) and sends the hash; a
# plain "password" is hashed here, in a thread. Config users are listed, never changed.

USERS = web.AppKey("runtime_users", Any)  # mta.smtp.auth.RuntimeUsers | None
_USER_RE = re.compile(r"^[^\s\x00]{1,256}$")


def _users(request: web.Request) -> Any:
    users = request.app.get(USERS)
    if users is None or request.app[state.POLICY_ADMIN] is None:
        raise ApiError(503, "users_unavailable", "no run-time users in this process")
    return users


def _name(value: Any) -> str:
    if not isinstance(value, str) or not _USER_RE.match(value):
        raise ApiError(400, "bad_user", f"not a user name: {value!r}")
    return value


async def _password_hash(doc: dict[str, Any]) -> str:
    hashed, plain = doc.get("password_hash"), doc.get("password")
    if isinstance(hashed, str) and hashed.startswith("$scrypt$") and hashed.count("$") == 4:
        return hashed
    if isinstance(plain, str) and plain:
        from mta.smtp.auth import hash_password  # the one owner of the hash format
        return await asyncio.to_thread(hash_password, plain)
    raise ApiError(400, "bad_field", "password_hash (as `mta passwd` prints) or password "
                   "is required")


def _networks(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ApiError(400, "bad_field", "networks: a list of CIDRs")
    try:
        return [str(ipaddress.ip_network(n, strict=False)) for n in value]
    except (TypeError, ValueError) as e:
        raise ApiError(400, "bad_field", f"networks: {e}") from None


def _public(name: str, rec: dict[str, Any], source: str) -> dict[str, Any]:
    return {"name": name, "tenant": rec["tenant"], "networks": rec.get("networks", []),
            "disabled": bool(rec.get("disabled")), "created": rec.get("created"),
            "source": source}


async def _existing(request: web.Request, users: Any) -> tuple[str, dict[str, Any]]:
    name = _name(request.match_info["name"])
    if name in users.config:
        raise ApiError(409, "config_user", f"{name!r} is a [users] entry of the config: "
                       "edit the config and reload (SIGHUP)")
    rec = await users.record(name)
    if rec is None:
        raise ApiError(404, "not_found", f"no run-time user {name!r}")
    return name, rec


@routes.get("/api/v1/admin/users")
async def users_list(request: web.Request) -> web.Response:
    users = _users(request)
    out = [_public(n, {"tenant": u.tenant, "networks": [str(x) for x in u.networks]},
                   "config") for n, u in users.config.items()]
    out += [_public(n, r, "runtime") for n, r in (await users.records()).items()
            if n not in users.config]
    return web.json_response({"users": sorted(out, key=lambda u: u["name"])})


@routes.post("/api/v1/admin/users")
async def users_add(request: web.Request) -> web.Response:
    users = _users(request)
    doc = await json_object(request)
    name, tenant = _name(doc.get("name")), _tenant(doc.get("tenant"))
    if name in users.config or await users.record(name) is not None:
        raise ApiError(409, "user_exists", f"there is a user {name!r} already")
    await require_tenant(request, tenant)
    rec = {"tenant": tenant, "password": await _password_hash(doc),
           "networks": _networks(doc.get("networks")), "disabled": False,
           "created": round(time.time(), 3)}
    await users.put(name, rec)
    emit(request, "user_added", user=name, tenant=tenant)
    return web.json_response(_public(name, rec, "runtime"), status=201)


@routes.put("/api/v1/admin/users/{name}/password")
async def users_passwd(request: web.Request) -> web.Response:
    users = _users(request)
    name, rec = await _existing(request, users)
    rec["password"] = await _password_hash(await json_object(request))
    await users.put(name, rec)
    emit(request, "user_passwd", user=name, tenant=rec["tenant"])
    return web.json_response(_public(name, rec, "runtime"))


async def _set_disabled(request: web.Request, disabled: bool) -> web.Response:
    users = _users(request)
    name, rec = await _existing(request, users)
    rec["disabled"] = disabled
    await users.put(name, rec)
    emit(request, "user_disabled" if disabled else "user_enabled", user=name,
         tenant=rec["tenant"])
    return web.json_response(_public(name, rec, "runtime"))


@routes.post("/api/v1/admin/users/{name}/disable")
async def users_disable(request: web.Request) -> web.Response:
    return await _set_disabled(request, True)


@routes.post("/api/v1/admin/users/{name}/enable")
async def users_enable(request: web.Request) -> web.Response:
    return await _set_disabled(request, False)


@routes.delete("/api/v1/admin/users/{name}")
async def users_remove(request: web.Request) -> web.Response:
    users = _users(request)
    name, rec = await _existing(request, users)
    await users.delete(name)
    emit(request, "user_removed", user=name, tenant=rec["tenant"])
    return web.json_response({"removed": _public(name, rec, "runtime")})


# The OpenAPI description of these routes (openapi.py puts the document together).
_API_KEY = {"type": "object", "properties": {
    "id": {"type": "string", "description": "first 12 hex digits of the key's SHA-256"},
    "tenant": {"type": "string"}, "created": {"type": ["number", "null"]},
    "label": {"type": "string"},
    "source": {"type": "string", "enum": ["runtime", "config"]}}}
_KEY_ERRORS = _errors((400, "bad_tenant, bad_json, bad_request, bad_field, bad_id"),
                      (404, "not_found: no such tenant, or no such run-time key"),
                      (503, "policy_unavailable: no policy store in this process"))
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/keys": {
        "get": _op("API keys (of one tenant): run-time and from the config, never the keys",
                   _ok("Keys", {"type": "object", "properties": {
                       "keys": {"type": "array", "items": _API_KEY}}}) | _KEY_ERRORS,
                   tag="keys", params=[_query("tenant", "only this tenant's",
                                              {"type": "string"})]),
        "post": _op("Create an API key; the key is in this answer only (a hash is stored). "
                    "Event key_created.",
                    _ok("Created", {"allOf": [_API_KEY, {"type": "object", "properties": {
                        "key": {"type": "string"}}}]}, "201") | _KEY_ERRORS, tag="keys",
                    body={"type": "object", "required": ["tenant"], "properties": {
                        "tenant": {"type": "string"}, "label": {"type": "string"}}})},
    "/api/v1/admin/keys/{tenant}/{id}": {"delete": _op(
        "Revoke a run-time key: refused at once on every node sharing the store. Event "
        "key_revoked.",
        _ok("Revoked", {"type": "object", "properties": {"revoked": _API_KEY}})
        | _KEY_ERRORS | _errors((409, "config_key: a config key (edit the config, SIGHUP)")),
        tag="keys", params=[_path_param("tenant", "Tenant name"),
                            _path_param("id", "Key id (8 to 64 hex digits)")])},
}

_USER = {"type": "object", "properties": {
    "name": {"type": "string"}, "tenant": {"type": "string"},
    "networks": {"type": "array", "items": {"type": "string"}},
    "disabled": {"type": "boolean"}, "created": {"type": ["number", "null"]},
    "source": {"type": "string", "enum": ["runtime", "config"]}}}
_PASSWORD = {"type": "object", "properties": {
    "password_hash": {"type": "string", "description": "as `mta passwd` prints ($scrypt$...)"},
    "password": {"type": "string", "description": "hashed by the server"}}}
_USER_ERRORS = _errors((400, "bad_user, bad_tenant, bad_json, bad_request, bad_field"),
                       (404, "not_found: no such tenant or run-time user"),
                       (409, "user_exists, config_user (a [users] entry: edit the config)"),
                       (503, "users_unavailable"))
_USER_NAME = [_path_param("name", "SMTP AUTH user name")]
OPENAPI_PATHS["/api/v1/admin/users"] = {
    "get": _op("SMTP AUTH users: run-time and from the config (never their hashes)",
               _ok("Users", {"type": "object", "properties": {
                   "users": {"type": "array", "items": _USER}}}) | _USER_ERRORS, tag="keys"),
    "post": _op("Add a run-time SMTP AUTH user, effective at once on every node. Event "
                "user_added.", _ok("Added", _USER, "201") | _USER_ERRORS, tag="keys",
                body={"allOf": [_PASSWORD, {"type": "object", "required": ["name", "tenant"],
                                            "properties": {
                    "name": {"type": "string"}, "tenant": {"type": "string"},
                    "networks": {"type": "array", "items": {"type": "string"}}}}]})}
OPENAPI_PATHS["/api/v1/admin/users/{name}/password"] = {"put": _op(
    "Set a run-time user's password. Event user_passwd.", _ok("Changed", _USER)
    | _USER_ERRORS, tag="keys", body=_PASSWORD, params=_USER_NAME)}
for _verb in ("disable", "enable"):
    OPENAPI_PATHS[f"/api/v1/admin/users/{{name}}/{_verb}"] = {"post": _op(
        f"{_verb.capitalize()} a run-time user (its next AUTH on any node). Event "
        f"user_{_verb}d.", _ok("Changed", _USER) | _USER_ERRORS, tag="keys",
        params=_USER_NAME)}
OPENAPI_PATHS["/api/v1/admin/users/{name}"] = {"delete": _op(
    "Remove a run-time user. Event user_removed.", _ok("Removed", {
        "type": "object", "properties": {"removed": _USER}}) | _USER_ERRORS, tag="keys",
    params=_USER_NAME)}
