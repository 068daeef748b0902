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
from mta.http.errors import ApiError, json_object
from mta.policy.domains import VERIFY_PREFIX, DomainRecord, UnknownDomain
from mta.policy.sender_domain import normalise_domain

__all__ = ["routes"]

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
