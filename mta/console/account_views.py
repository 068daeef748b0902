"""The console's Accounts page (admins only): list the accounts, and add, change the role
of, reset the password of, disable, enable and remove run-time accounts. Each action goes
through a confirmation page and a CSRF-checked POST, like the queue and tenant actions,
and is done by the same mta.console.accounts.Accounts calls as the admin API
(/api/v1/admin/console/accounts) and `mta console accounts`. Config accounts are listed,
never changed here."""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from mta.config.console import ROLES
from mta.console.accounts import MIN_PASSWORD, AccountError, password_hash
from mta.console.site import ACCOUNT, CONSOLE, FORM, refuse

__all__ = ["routes"]

routes = web.RouteTableDef()

_ACTIONS = "role|passwd|disable|enable|remove"
_WHAT = {"role": "the role of console account {}",
         "passwd": "a new password for console account {} (its sessions end)",
         "disable": "console account {} (it cannot sign in; its sessions end)",
         "enable": "console account {} again",
         "remove": "console account {} for good (its sessions end)"}
_PASSWORD = {"name": "password", "label": "Password", "type": "password", "min": MIN_PASSWORD}
_ADD_FIELDS = [
    {"name": "name", "label": "Account name", "type": "text"},
    {"name": "role", "label": "Role", "type": "select", "options": list(ROLES),
     "value": "viewer"},
    {"name": "tenant", "label": "Tenant", "type": "text", "required": False,
     "hint": "only for a tenant's portal account: it sees that tenant only"},
    _PASSWORD,
]


def _may_manage(request: web.Request) -> web.Response | None:
    account = request[ACCOUNT]
    if not account.can_manage:
        kind = "tenant" if account.tenant else account.role
        return refuse(request, 403, f"Your account ({kind}) may not manage accounts: that "
                      "is for admins.")
    return None


def _by(request: web.Request) -> str:
    return f"console:{request[ACCOUNT].name}"


def _render(request: web.Request, template: str, **ctx: Any) -> web.Response:
    return request.app[CONSOLE].render(request, template, **ctx)


def _done(text: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/console/accounts?done=" + urllib.parse.quote_plus(text))


@routes.get("/accounts")
async def accounts_page(request: web.Request) -> web.Response:
    refused = _may_manage(request)
    if refused:
        return refused
    accounts = request.app[CONSOLE].accounts
    return _render(request, "accounts.html", page="accounts",
                   accounts=await accounts.describe(), runtime=accounts.kv is not None,
                   done=request.query.get("done", ""))


@routes.get("/accounts/add")
async def add_confirm(request: web.Request) -> web.Response:
    return (_may_manage(request) or
            _render(request, "confirm.html", page="accounts", action="add",
                    what="a console account", post="/console/accounts/add",
                    back="/console/accounts", fields=_ADD_FIELDS))


@routes.post("/accounts/add")
async def add(request: web.Request) -> web.Response:
    refused = _may_manage(request)
    if refused:
        return refused
    form = request[FORM]
    name = str(form.get("name", "")).strip()
    try:
        hashed = await password_hash(plain=str(form.get("password", "")))
        rec = await request.app[CONSOLE].accounts.add(
            name, role=str(form.get("role", "viewer")),
            tenant=str(form.get("tenant", "")).strip() or None, password=hashed,
            by=_by(request))
    except AccountError as e:
        return refuse(request, e.status, f"Not done: {e}")
    what = f"tenant {rec['tenant']}" if rec["tenant"] else rec["role"]
    raise _done(f"added {rec['name']} ({what})")


async def _target(request: web.Request) -> dict[str, Any] | web.Response:
    name = request.match_info["name"]
    for a in await request.app[CONSOLE].accounts.describe():
        if a["name"] == name:
            if a["source"] == "config":
                return refuse(request, 409, f"{name} is an account of the config file: "
                              "change it there and reload (SIGHUP).")
            return a
    return refuse(request, 404, f"No console account {name}.")


def _fields(action: str, target: dict[str, Any]) -> list[dict[str, Any]]:
    if action == "role":
        return [{"name": "role", "label": "Role", "type": "select", "options": list(ROLES),
                 "value": target["role"]}]
    return [_PASSWORD] if action == "passwd" else []


def _self_harm(request: web.Request, action: str, form: dict[str, Any] | None) -> str | None:
    """An admin does not lock themselves out from the console (the CLI and API can)."""
    if request.match_info["name"] != request[ACCOUNT].name:
        return None
    if action in ("remove", "disable") or (
            action == "role" and form is not None and form.get("role") != "admin"):
        return "You cannot remove, disable or demote your own account here."
    return None


@routes.get("/accounts/{name}/{action:" + _ACTIONS + "}")
async def account_confirm(request: web.Request) -> web.Response:
    refused = _may_manage(request)
    if refused:
        return refused
    target = await _target(request)
    if isinstance(target, web.Response):
        return target
    action = request.match_info["action"]
    harm = action in ("remove", "disable") and _self_harm(request, action, None)
    if harm:
        return refuse(request, 409, harm)
    return _render(request, "confirm.html", page="accounts",
                   action={"passwd": "reset password"}.get(action, action),
                   what=_WHAT[action].format(target["name"]),
                   post=f"/console/accounts/{target['name']}/{action}",
                   back="/console/accounts", fields=_fields(action, target))


@routes.post("/accounts/{name}/{action:" + _ACTIONS + "}")
async def account_action(request: web.Request) -> web.Response:
    refused = _may_manage(request)
    if refused:
        return refused
    target = await _target(request)
    if isinstance(target, web.Response):
        return target
    action, form = request.match_info["action"], request[FORM]
    harm = _self_harm(request, action, form)
    if harm:
        return refuse(request, 409, harm)
    accounts, name, by = request.app[CONSOLE].accounts, target["name"], _by(request)
    try:
        if action == "role":
            rec = await accounts.set_role(name, str(form.get("role", "")), by=by)
            done = f"{name} is now {rec['role']}"
        elif action == "passwd":
            await accounts.set_password(
                name, await password_hash(plain=str(form.get("password", ""))), by=by)
            done = f"new password for {name}"
        elif action in ("disable", "enable"):
            await accounts.set_disabled(name, action == "disable", by=by)
            done = f"{action}d {name}"
        else:
            await accounts.remove(name, by=by)
            done = f"removed {name}"
    except AccountError as e:
        return refuse(request, e.status, f"Not done: {e}")
    raise _done(done)
