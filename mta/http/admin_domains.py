"""/api/v1/admin/domains/...: tenants' sending domains (what `mta domains ...` calls).

    GET    /api/v1/admin/domains?tenant=T                  registered domains (of T)
    POST   /api/v1/admin/domains                           {tenant, domain}: register; 201
                                                           with the token and the TXT
                                                           record to publish
    POST   /api/v1/admin/domains/{tenant}/{domain}/verify  look the TXT record up now
    GET    /api/v1/admin/domains/{tenant}/{domain}/check   SPF, DKIM, DMARC and alignment
    DELETE /api/v1/admin/domains/{tenant}/{domain}         forget it

Without sender identity in this process every route answers 503 `identity_unavailable`.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import query as _query
from mta.http.errors import ApiError, json_object
from mta.policy.domains import VERIFY_PREFIX, DomainRecord, UnknownDomain
from mta.policy.sender_domain import normalise_domain

__all__ = ["OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()

_TENANT_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _identity(request: web.Request) -> Any:
    ingress = request.app[state.INGRESS]
    identity = getattr(ingress, "identity", None)
    if identity is None:
        raise ApiError(503, "identity_unavailable", "no sender identity runs in this process")
    return identity


def _tenant(value: Any) -> str:
    if not isinstance(value, str) or not _TENANT_RE.match(value):
        raise ApiError(400, "bad_tenant", f"not a tenant name: {value!r}")
    return value


def _domain(value: Any) -> str:
    if not isinstance(value, str):
        raise ApiError(400, "bad_domain", "domain must be a string")
    try:
        return normalise_domain(value)
    except ValueError as e:
        raise ApiError(400, "bad_domain", str(e)) from None


def _json(identity: Any, r: DomainRecord) -> dict[str, Any]:
    return {**r.as_dict(), "txt_record": {
        "name": identity.registry.record_name(r.domain), "type": "TXT",
        "value": VERIFY_PREFIX + r.token}}


def _path(request: web.Request) -> tuple[str, str]:
    return _tenant(request.match_info["tenant"]), _domain(request.match_info["domain"])


@routes.get("/api/v1/admin/domains")
async def domains_list(request: web.Request) -> web.Response:
    identity = _identity(request)
    tenant = request.query.get("tenant")
    records = await identity.registry.list(_tenant(tenant) if tenant is not None else None)
    return web.json_response({"domains": [_json(identity, r) for r in records]})


@routes.post("/api/v1/admin/domains")
async def domains_add(request: web.Request) -> web.Response:
    identity = _identity(request)
    doc = await json_object(request)
    rec = await identity.registry.add(_tenant(doc.get("tenant")), _domain(doc.get("domain")))
    return web.json_response(_json(identity, rec), status=201)


@routes.post("/api/v1/admin/domains/{tenant}/{domain}/verify")
async def domains_verify(request: web.Request) -> web.Response:
    identity = _identity(request)
    tenant, domain = _path(request)
    try:
        rec = await identity.registry.verify(tenant, domain)
    except UnknownDomain as e:
        raise ApiError(404, "unknown_domain", str(e.args[0])) from None
    return web.json_response(_json(identity, rec))


@routes.get("/api/v1/admin/domains/{tenant}/{domain}/check")
async def domains_check(request: web.Request) -> web.Response:
    identity = _identity(request)
    tenant, domain = _path(request)
    try:
        rec = await identity.registry.get(tenant, domain)
    except UnknownDomain:
        rec = None  # a report about any domain is still useful before registering it
    signer = getattr(request.app[state.INGRESS], "signer", None)
    report = await identity.check(domain, signer)
    report["registration"] = None if rec is None else _json(identity, rec)
    return web.json_response(report)


@routes.delete("/api/v1/admin/domains/{tenant}/{domain}")
async def domains_remove(request: web.Request) -> web.Response:
    identity = _identity(request)
    tenant, domain = _path(request)
    if not await identity.registry.remove(tenant, domain):
        raise ApiError(404, "unknown_domain", f"tenant {tenant!r} has not registered {domain}")
    return web.json_response({"removed": {"tenant": tenant, "domain": domain}})


# The OpenAPI description of these routes (openapi.py puts the document together).
_SENDING_DOMAIN = {"type": "object", "properties": {
    "tenant": {"type": "string"}, "domain": {"type": "string"}, "token": {"type": "string"},
    "added": {"type": "number"}, "verified": {"type": "boolean"},
    "verified_at": {"type": ["number", "null"]}, "checked_at": {"type": ["number", "null"]},
    "last_error": {"type": "string"},
    "txt_record": {"type": "object", "description": "What to publish to verify", "properties": {
        "name": {"type": "string"}, "type": {"type": "string"}, "value": {"type": "string"}}}}}
_SD_ERRORS = _errors((400, "bad_tenant, bad_domain, bad_json"),
                     (503, "identity_unavailable: no sender identity in this process"))
_SD_PARAMS = [_path_param("tenant", "Tenant name",
                          {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}),
              _path_param("domain", "Sending domain (its subdomains are covered too)",
                          {"type": "string", "maxLength": 253})]
_SD_404 = _errors((404, "unknown_domain: the tenant has not registered it"))

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/domains": {
        "get": _op("Registered sending domains (of one tenant)", _ok("Domains", {
            "type": "object", "properties": {"domains": {
                "type": "array", "items": _SENDING_DOMAIN}}}) | _SD_ERRORS, tag="identity",
            params=[_query("tenant", "Only this tenant's", {"type": "string"})]),
        "post": _op("Register a sending domain of a tenant (idempotent): the TXT record to "
                    "publish", _ok("The registration", _SENDING_DOMAIN, "201") | _SD_ERRORS,
                    tag="identity", body={
                        "type": "object", "required": ["tenant", "domain"], "properties": {
                            "tenant": {"type": "string"}, "domain": {"type": "string"}}})},
    "/api/v1/admin/domains/{tenant}/{domain}": {"delete": _op(
        "Forget a sending domain", _ok("Removed") | _SD_ERRORS | _SD_404, tag="identity",
        params=_SD_PARAMS)},
    "/api/v1/admin/domains/{tenant}/{domain}/verify": {"post": _op(
        "Look the mta-verify TXT record up now", _ok("The registration", _SENDING_DOMAIN)
        | _SD_ERRORS | _SD_404, tag="identity", params=_SD_PARAMS)},
    "/api/v1/admin/domains/{tenant}/{domain}/check": {"get": _op(
        "SPF, DKIM and DMARC records of the domain and their alignment", _ok("Report", {
            "type": "object", "properties": {
                "domain": {"type": "string"}, "spf": {"type": "object"},
                "dkim": {"type": "object"}, "dmarc": {"type": "object"},
                "alignment": {"type": "object"},
                "registration": {"oneOf": [_SENDING_DOMAIN, {"type": "null"}]}}})
        | _SD_ERRORS, tag="identity", params=_SD_PARAMS)},
}
