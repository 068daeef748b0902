"""/api/v1/admin/tenants...: tenants, credits, limits and suspensions;
/api/v1/admin/sender-domains/{domain}/suspensions: suspensions of a MAIL FROM domain.

A thin layer over mta.policy.PolicyAdmin (what `mta policy ...` calls): each route checks
its input, calls one method and writes the result as JSON. Without a policy engine in this
process (`make_app(policy_admin=None)`) every route answers 503 `policy_unavailable`.
A `PolicyError` (unknown tenant, bad amount, date in the past...) is 404 `not_found` when
the tenant does not exist, else 400 `policy_error`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.apidoc import DATE as _DATE
from mta.http.apidoc import DURATION as _DURATION
from mta.http.apidoc import TENANT as _TENANT
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import query as _query
from mta.http.apidoc import ref as _ref
from mta.http.errors import ApiError, json_object, positive_duration
from mta.policy import Limits, PolicyError, Tenant
from mta.policy.sender_domain import normalise_domain

__all__ = ["OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TENANT_FIELDS = ("name", "plan", "parent", "status", "pool", "classes", "default_class",
                  "prepaid", "limits")


def _admin(request: web.Request) -> Any:
    admin = request.app[state.POLICY_ADMIN]
    if admin is None:
        raise ApiError(503, "policy_unavailable", "no policy engine runs in this process")
    return admin


def _tenant(request: web.Request) -> str:
    name = request.match_info["name"]
    if not _NAME_RE.match(name):
        raise ApiError(400, "bad_tenant", f"not a tenant name: {name!r}")
    return name


def _field(doc: dict[str, Any], key: str, kind: type | tuple[type, ...], *,
           required: bool = False, default: Any = None) -> Any:
    if key not in doc or doc[key] is None:
        if required:
            raise ApiError(400, "missing_field", f"{key} is required")
        return default
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, "bad_field", f"{key}: wrong type")
    return value


def _when(doc: dict[str, Any], key: str, *, required: bool = False) -> Any:
    """ISO date ("2026-12-31": through that day, local) or datetime, or POSIX seconds."""
    value = _field(doc, key, (str, int, float), required=required)
    if value is None or isinstance(value, int | float):
        return value
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        return dt.datetime.fromisoformat(value)
    except ValueError:
        raise ApiError(400, "bad_field", f"{key}: expected a date like 2026-12-31") from None


def _duration(doc: dict[str, Any]) -> float | None:
    """"duration": seconds or "2h"; the end is counted on the policy clock."""
    return positive_duration(_field(doc, "duration", (str, int, float)))


async def _call(coro: Any) -> Any:
    try:
        return await coro
    except PolicyError as e:
        if str(e).startswith("unknown tenant"):
            raise ApiError(404, "not_found", str(e)) from None
        raise ApiError(400, "policy_error", str(e)) from None


def _plain(obj: Any) -> Any:
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def _tenant_json(t: Any) -> dict[str, Any]:
    d = dataclasses.asdict(t)
    d.pop("source", None)
    d["classes"] = list(d.get("classes", ()))
    return d


# --- tenants ------------------------------------------------------------------------------

@routes.get("/api/v1/admin/tenants")
async def tenants_list(request: web.Request) -> web.Response:
    tenants = await _call(_admin(request).list_tenants())
    return web.json_response({"tenants": [_tenant_json(t) for t in tenants]})


@routes.post("/api/v1/admin/tenants")
async def tenant_create(request: web.Request) -> web.Response:
    admin = _admin(request)
    doc = await json_object(request)
    unknown = set(doc) - set(_TENANT_FIELDS)
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    name = _field(doc, "name", str, required=True)
    if not _NAME_RE.match(name):
        raise ApiError(400, "bad_tenant", f"not a tenant name: {name!r}")
    try:
        limits = Limits(**_field(doc, "limits", dict, default={}))
        tenant = Tenant(name=name, plan=_field(doc, "plan", str, default=""),
                        parent=_field(doc, "parent", str, default=""),
                        status=_field(doc, "status", str, default="active"),
                        pool=_field(doc, "pool", str, default=""),
                        classes=tuple(_field(doc, "classes", list, default=[])),
                        default_class=_field(doc, "default_class", str, default=""),
                        prepaid=_field(doc, "prepaid", bool, default=False),
                        limits=limits, source="store")
    except TypeError as e:
        raise ApiError(400, "bad_field", f"limits: {e}") from None
    await _call(admin.create_tenant(tenant))
    metrics = request.app[state.METRICS]
    if metrics is not None:
        metrics.add_tenant(name)
    return web.json_response(_tenant_json(tenant), status=201)


@routes.delete("/api/v1/admin/tenants/{name}")
async def tenant_delete(request: web.Request) -> web.Response:
    name = _tenant(request)
    if not await _call(_admin(request).delete_tenant(name)):
        raise ApiError(404, "not_found", f"no tenant {name!r} in the store")
    return web.json_response({"tenant": name, "result": "deleted"})


# --- credits ------------------------------------------------------------------------------

@routes.get("/api/v1/admin/tenants/{name}/credits")
async def credits_show(request: web.Request) -> web.Response:
    summary = await _call(_admin(request).credits(_tenant(request)))
    return web.json_response(_plain(summary))


@routes.post("/api/v1/admin/tenants/{name}/credits")
async def credits_add(request: web.Request) -> web.Response:
    name = _tenant(request)
    admin = _admin(request)
    doc = await json_object(request)
    lot = await _call(admin.add_credits(
        name, _field(doc, "amount", int, required=True),
        paid=_field(doc, "paid", bool, default=False), expires=_when(doc, "expires"),
        note=_field(doc, "note", str, default="")))
    return web.json_response(_plain(lot), status=201)


@routes.get("/api/v1/admin/tenants/{name}/credits/history")
async def credits_history(request: web.Request) -> web.Response:
    name = _tenant(request)
    try:
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        raise ApiError(400, "bad_limit", "limit must be an integer") from None
    if not 1 <= limit <= 10_000:
        raise ApiError(400, "bad_limit", "limit must be between 1 and 10000")
    entries = await _call(_admin(request).history(name, limit))
    return web.json_response({"entries": [_plain(e) for e in entries]})


@routes.post("/api/v1/admin/credit-lots/{lot}/paid")
async def credits_paid(request: web.Request) -> web.Response:
    admin = _admin(request)
    try:
        lot_id = int(request.match_info["lot"])
    except ValueError:
        raise ApiError(400, "bad_lot", "a lot id is an integer") from None
    return web.json_response(_plain(await _call(admin.mark_paid(lot_id))))


# --- limits -------------------------------------------------------------------------------

@routes.get("/api/v1/admin/tenants/{name}/limits")
async def limits_usage(request: web.Request) -> web.Response:
    usage = await _call(_admin(request).usage(_tenant(request)))
    return web.json_response({"usage": [_plain(u) for u in usage]})


@routes.post("/api/v1/admin/tenants/{name}/limits")
async def limits_set(request: web.Request) -> web.Response:
    name = _tenant(request)
    admin = _admin(request)
    doc = await json_object(request)
    limit = await _call(admin.set_limit(
        name, _field(doc, "name", str, required=True), _field(doc, "value", int, required=True),
        until=_when(doc, "until", required=True), reason=_field(doc, "reason", str,
                                                                 required=True)))
    return web.json_response(_plain(limit), status=201)


@routes.delete("/api/v1/admin/tenants/{name}/limits")
async def limits_clear(request: web.Request) -> web.Response:
    name = _tenant(request)
    n = await _call(_admin(request).clear_limit(name, request.query.get("name") or None))
    return web.json_response({"tenant": name, "cleared": n})


# --- suspensions --------------------------------------------------------------------------

@routes.post("/api/v1/admin/tenants/{name}/suspensions")
async def suspend(request: web.Request) -> web.Response:
    name = _tenant(request)
    admin = _admin(request)
    doc = await json_object(request)
    s = await _call(admin.suspend(name, _field(doc, "reason", str, required=True),
                                  msg_class=_field(doc, "class", str),
                                  until=_when(doc, "until"), duration=_duration(doc)))
    return web.json_response(_plain(s), status=201)


@routes.delete("/api/v1/admin/tenants/{name}/suspensions")
async def unsuspend(request: web.Request) -> web.Response:
    name = _tenant(request)
    n = await _call(_admin(request).unsuspend(name, request.query.get("class") or None))
    return web.json_response({"tenant": name, "lifted": n})


@routes.get("/api/v1/admin/tenants/{name}/suspensions")
async def suspensions_list(request: web.Request) -> web.Response:
    name = _tenant(request)
    active = await _call(_admin(request).suspensions(name))
    return web.json_response({"tenant": name, "suspensions": [_plain(s) for s in active]})


# --- sender-domain suspensions ------------------------------------------------------------

def _domain(request: web.Request) -> str:
    try:
        return normalise_domain(request.match_info["domain"])
    except ValueError as e:
        raise ApiError(400, "bad_domain", str(e)) from None


def _domain_suspension(domain: str, s: Any) -> dict[str, Any]:
    d = _plain(s)
    d.pop("tenant", None)  # the store subject "@domain" is an implementation detail
    d.pop("msg_class", None)  # always all mail
    return {"domain": domain, **d}


@routes.get("/api/v1/admin/sender-domains/{domain}/suspensions")
async def domain_suspensions(request: web.Request) -> web.Response:
    domain = _domain(request)
    active = await _call(_admin(request).sender_domain_suspensions(domain))
    return web.json_response({"domain": domain,
                              "suspensions": [_domain_suspension(domain, s) for s in active]})


@routes.post("/api/v1/admin/sender-domains/{domain}/suspensions")
async def domain_suspend(request: web.Request) -> web.Response:
    domain = _domain(request)
    admin = _admin(request)
    doc = await json_object(request)
    unknown = set(doc) - {"reason", "until", "duration"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    reason = _field(doc, "reason", str, required=True)
    if not reason.strip() or "\n" in reason or "\r" in reason:
        raise ApiError(400, "bad_field", "reason: one non-empty line")
    s = await _call(admin.suspend_sender_domain(domain, reason.strip(),
                                                until=_when(doc, "until"),
                                                duration=_duration(doc)))
    return web.json_response(_domain_suspension(domain, s), status=201)


@routes.delete("/api/v1/admin/sender-domains/{domain}/suspensions")
async def domain_resume(request: web.Request) -> web.Response:
    domain = _domain(request)
    n = await _call(_admin(request).resume_sender_domain(domain))
    return web.json_response({"domain": domain, "lifted": n})


# The OpenAPI description of these routes (openapi.py puts the document together).
_POLICY_ERRORS = _errors(
    (400, "bad_tenant, bad_json, bad_request, missing_field, bad_field, policy_error"),
    (404, "not_found: no such tenant"),
    (503, "policy_unavailable: no policy engine in this process"))
_DOMAIN = _path_param("domain", "Sender (MAIL FROM) domain, exactly: subdomains are not "
                      "included", {"type": "string", "maxLength": 253})
_DOMAIN_ERRORS = _errors(
    (400, "bad_domain, bad_json, bad_request, missing_field, bad_field, unknown_field, "
          "policy_error"),
    (503, "policy_unavailable: no policy engine in this process"))
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/tenants": {
        "get": _op("List tenants (configured and created)", _ok("Tenants", {
            "type": "object", "properties": {"tenants": {
                "type": "array", "items": _ref("Tenant")}}}) | _POLICY_ERRORS, tag="policy"),
        "post": _op("Create a tenant in the policy store",
                    _ok("Created", _ref("Tenant"), "201") | _POLICY_ERRORS,
                    body=_ref("Tenant"), tag="policy")},
    "/api/v1/admin/tenants/{name}": {"delete": _op(
        "Delete a tenant created through the API", _ok("Deleted") | _POLICY_ERRORS,
        params=[_TENANT], tag="policy")},
    "/api/v1/admin/tenants/{name}/credits": {
        "get": _op("Credit balance and lots", _ok("Credit summary") | _POLICY_ERRORS,
                   params=[_TENANT], tag="policy"),
        "post": _op("Add a lot of credits", _ok("The new lot", None, "201") | _POLICY_ERRORS,
                    params=[_TENANT], tag="policy", body={
                        "type": "object", "required": ["amount"], "properties": {
                            "amount": {"type": "integer", "minimum": 1},
                            "paid": {"type": "boolean", "default": False},
                            "expires": _DATE, "note": {"type": "string"}}})},
    "/api/v1/admin/tenants/{name}/credits/history": {"get": _op(
        "Credit ledger, oldest first", _ok("Ledger entries") | _POLICY_ERRORS,
        params=[_TENANT, _query("limit", "At most this many", {
            "type": "integer", "minimum": 1, "maximum": 10000, "default": 100})],
        tag="policy")},
    "/api/v1/admin/credit-lots/{lot}/paid": {"post": _op(
        "Mark a lot of credits paid", _ok("The lot") | _POLICY_ERRORS,
        params=[_path_param("lot", "Lot id", {"type": "integer"})], tag="policy")},
    "/api/v1/admin/tenants/{name}/limits": {
        "get": _op("Usage against the effective limits", _ok("Usage") | _POLICY_ERRORS,
                   params=[_TENANT], tag="policy"),
        "post": _op("Set a temporary operator limit", _ok("The limit", None, "201")
                    | _POLICY_ERRORS, params=[_TENANT], tag="policy", body={
                        "type": "object", "required": ["name", "value", "until", "reason"],
                        "properties": {
                            "name": {"type": "string", "enum": [
                                "messages_per_hour", "messages_per_day", "messages_per_month",
                                "unique_recipients_per_month"]},
                            "value": {"type": "integer", "minimum": 0},
                            "until": _DATE, "reason": {"type": "string"}}}),
        "delete": _op("Clear operator limits (one with ?name=)", _ok("Cleared")
                      | _POLICY_ERRORS, tag="policy", params=[
                          _TENANT, _query("name", "Only this limit", {"type": "string"})])},
    "/api/v1/admin/tenants/{name}/suspensions": {
        "post": _op("Suspend a tenant (or one message class)",
                    _ok("The suspension", None, "201") | _POLICY_ERRORS, params=[_TENANT],
                    tag="policy", body={
                        "type": "object", "required": ["reason"], "properties": {
                            "reason": {"type": "string"}, "class": {"type": "string"},
                            "until": _DATE, "duration": _DURATION}}),
        "get": _op("The tenant's own active suspensions", _ok("Suspensions", {
            "type": "object", "properties": {"tenant": {"type": "string"}, "suspensions": {
                "type": "array", "items": {"type": "object"}}}}) | _POLICY_ERRORS,
            params=[_TENANT], tag="policy"),
        "delete": _op("Lift suspensions (one class with ?class=)", _ok("Lifted")
                      | _POLICY_ERRORS, tag="policy", params=[
                          _TENANT, _query("class", "Only this class", {"type": "string"})])},
    "/api/v1/admin/sender-domains/{domain}/suspensions": {
        "get": _op("Active suspensions of a sender domain", _ok("Suspensions", {
            "type": "object", "properties": {"domain": {"type": "string"}, "suspensions": {
                "type": "array", "items": _ref("DomainSuspension")}}}) | _DOMAIN_ERRORS,
            params=[_DOMAIN], tag="policy"),
        "post": _op("Suspend a sender domain: MAIL FROM of exactly this domain is refused "
                    "for every tenant (554 5.7.1; 451 4.7.1 while an end is set)",
                    _ok("The suspension", _ref("DomainSuspension"), "201") | _DOMAIN_ERRORS,
                    params=[_DOMAIN], tag="policy", body={
                        "type": "object", "required": ["reason"],
                        "additionalProperties": False, "properties": {
                            "reason": {"type": "string"}, "until": _DATE,
                            "duration": _DURATION}}),
        "delete": _op("Lift the suspensions of a sender domain", _ok("Lifted", {
            "type": "object", "properties": {"domain": {"type": "string"},
                                             "lifted": {"type": "integer"}}})
            | _DOMAIN_ERRORS, params=[_DOMAIN], tag="policy")},
}
