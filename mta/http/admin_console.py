"""/api/v1/admin/console/accounts: the operator console's run-time accounts (what `mta
console accounts` calls; the console's own Accounts page does the same for its admins).

    GET    /api/v1/admin/console/accounts                  config and run-time accounts
                                                           (never a hash)
    POST   /api/v1/admin/console/accounts                  {name, role?, tenant?,
                                                            password_hash | password}: 201;
                                                           event console_account_added
    PUT    /api/v1/admin/console/accounts/{name}/role      {role}; console_account_changed
    PUT    /api/v1/admin/console/accounts/{name}/password  {password_hash | password}: ends
                                                           its sessions; console_account_changed
    POST   /api/v1/admin/console/accounts/{name}/disable   ends its sessions; ..._changed
    POST   /api/v1/admin/console/accounts/{name}/enable    console_account_changed
    DELETE /api/v1/admin/console/accounts/{name}           ends its sessions;
                                                           console_account_removed

Run-time accounts live in the policy store (mta.console.accounts): every worker and node
sharing it sees a change at its next request. Accounts of the config file
([console.accounts.NAME], `source: "config"`) are listed, and changed only in the file
(409 config_account). A `tenant` makes a portal account of that tenant (role viewer).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.console.accounts import AccountError, password_hash
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.callers import is_local
from mta.http.errors import ApiError, json_object
from mta.policy.kv import kv_for

__all__ = ["ACCOUNTS", "OPENAPI_PATHS", "routes", "setup"]

routes = web.RouteTableDef()
ACCOUNTS = web.AppKey("console_accounts", Any)  # mta.console.accounts.Accounts | None
_BASE = "/api/v1/admin/console/accounts"


def setup(app: web.Application, console: Any, policy_admin: Any) -> None:
    """Give the console its run-time accounts (the policy store's) and the API its
    handle on them."""
    app[ACCOUNTS] = console.accounts if console is not None else None
    if console is None or policy_admin is None:
        return

    async def tenant_exists(name: str) -> bool:
        return await policy_admin.engine.tenants.get(name) is not None

    console.attach(kv_for(policy_admin.store), tenant_exists)


def _accounts(request: web.Request) -> Any:
    accounts = request.app.get(ACCOUNTS)
    if accounts is None or accounts.kv is None:
        raise ApiError(503, "accounts_unavailable",
                       "no console with run-time accounts in this process")
    return accounts


def _by(request: web.Request) -> str:
    return "admin-socket" if is_local(request) else "admin-api"


async def _do(call: Any) -> Any:
    try:
        return await call
    except AccountError as e:
        raise ApiError(e.status, e.code, str(e)) from None


async def _hash(doc: dict[str, Any]) -> str:
    return await _do(password_hash(doc.get("password_hash"), doc.get("password")))


@routes.get(_BASE)
async def accounts_list(request: web.Request) -> web.Response:
    return web.json_response({"accounts": await _accounts(request).describe()})


@routes.post(_BASE)
async def accounts_add(request: web.Request) -> web.Response:
    accounts = _accounts(request)
    doc = await json_object(request)
    unknown = set(doc) - {"name", "role", "tenant", "password", "password_hash"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    rec = await _do(accounts.add(doc.get("name"), role=doc.get("role", "viewer"),
                                 tenant=doc.get("tenant"), password=await _hash(doc),
                                 by=_by(request)))
    return web.json_response(rec, status=201)


@routes.put(_BASE + "/{name}/role")
async def accounts_role(request: web.Request) -> web.Response:
    doc = await json_object(request)
    return web.json_response(await _do(_accounts(request).set_role(
        request.match_info["name"], doc.get("role"), by=_by(request))))


@routes.put(_BASE + "/{name}/password")
async def accounts_password(request: web.Request) -> web.Response:
    accounts = _accounts(request)
    doc = await json_object(request)
    return web.json_response(await _do(accounts.set_password(
        request.match_info["name"], await _hash(doc), by=_by(request))))


@routes.post(_BASE + "/{name}/disable")
async def accounts_disable(request: web.Request) -> web.Response:
    return web.json_response(await _do(_accounts(request).set_disabled(
        request.match_info["name"], True, by=_by(request))))


@routes.post(_BASE + "/{name}/enable")
async def accounts_enable(request: web.Request) -> web.Response:
    return web.json_response(await _do(_accounts(request).set_disabled(
        request.match_info["name"], False, by=_by(request))))


@routes.delete(_BASE + "/{name}")
async def accounts_remove(request: web.Request) -> web.Response:
    return web.json_response({"removed": await _do(_accounts(request).remove(
        request.match_info["name"], by=_by(request)))})


# --- the routes in the OpenAPI document (mta/http/openapi.py) ---------------------------
_CONSOLE_ACCOUNT = {"type": "object", "properties": {
    "name": {"type": "string"},
    "role": {"type": "string", "enum": ["viewer", "operator", "admin"]},
    "tenant": {"type": ["string", "null"], "description": "a tenant portal account's tenant"},
    "source": {"type": "string", "enum": ["runtime", "config"]},
    "disabled": {"type": "boolean"}, "created": {"type": ["number", "null"]},
    "by": {"type": ["string", "null"]}}}
_CONSOLE_PASSWORD = {"type": "object", "properties": {
    "password_hash": {"type": "string", "description": "as `mta passwd` prints ($scrypt$...)"},
    "password": {"type": "string", "description": "at least 8 characters; hashed by the "
                                                  "server"}}}
_CONSOLE_ERRORS = _errors(
    (400, "bad_account, bad_role, bad_tenant, bad_field, weak_password, unknown_field, "
          "bad_json, bad_request"),
    (404, "not_found: no such run-time account, or no such tenant"),
    (409, "account_exists, config_account (a [console.accounts] entry: edit the config), "
          "tenant_account (a portal account has no role), too_many_accounts"),
    (503, "accounts_unavailable: no console or no policy store in this process"))
_CONSOLE_NAME = [_path_param("name", "Console account name")]
_CONSOLE_BASE = "/api/v1/admin/console/accounts"
OPENAPI_PATHS: dict[str, Any] = {
    _CONSOLE_BASE: {
        "get": _op("Console accounts: run-time and from the config (never their hashes)",
                   _ok("Accounts", {"type": "object", "properties": {
                       "accounts": {"type": "array", "items": _CONSOLE_ACCOUNT}}})
                   | _CONSOLE_ERRORS, tag="console"),
        "post": _op("Add a run-time console account, on every node sharing the policy store "
                    "at once. Event console_account_added.",
                    _ok("Added", _CONSOLE_ACCOUNT, "201") | _CONSOLE_ERRORS, tag="console",
                    body={"allOf": [_CONSOLE_PASSWORD, {
                        "type": "object", "required": ["name"], "properties": {
                            "name": {"type": "string"},
                            "role": {"type": "string",
                                     "enum": ["viewer", "operator", "admin"]},
                            "tenant": {"type": "string",
                                       "description": "a portal account of this tenant"}}}]})},
    _CONSOLE_BASE + "/{name}/role": {"put": _op(
        "Change a run-time account's role (its next request). Event console_account_changed.",
        _ok("Changed", _CONSOLE_ACCOUNT) | _CONSOLE_ERRORS, tag="console",
        body={"type": "object", "required": ["role"], "properties": {
            "role": {"type": "string", "enum": ["viewer", "operator", "admin"]}}},
        params=_CONSOLE_NAME)},
    _CONSOLE_BASE + "/{name}/password": {"put": _op(
        "Reset a run-time account's password; its sessions end. Event "
        "console_account_changed.", _ok("Changed", _CONSOLE_ACCOUNT) | _CONSOLE_ERRORS,
        tag="console", body=_CONSOLE_PASSWORD, params=_CONSOLE_NAME)},
    **{_CONSOLE_BASE + f"/{{name}}/{verb}": {"post": _op(
        f"{verb.capitalize()} a run-time account{'; its sessions end' if verb == 'disable' else ''}"
        ". Event console_account_changed.", _ok("Changed", _CONSOLE_ACCOUNT)
        | _CONSOLE_ERRORS, tag="console", params=_CONSOLE_NAME)}
       for verb in ("disable", "enable")},
    _CONSOLE_BASE + "/{name}": {"delete": _op(
        "Remove a run-time account; its sessions end. Event console_account_removed.",
        _ok("Removed", {"type": "object", "properties": {"removed": _CONSOLE_ACCOUNT}})
        | _CONSOLE_ERRORS, tag="console", params=_CONSOLE_NAME)},
}
