"""/api/v1/admin/shaping/...: administrative suspensions and the explanation of a path.

A thin layer over the daemon's one `mta.shaping.Shaper` (what `mta shaping ...` calls):

    GET    /api/v1/admin/shaping/suspensions                 active suspensions
    POST   /api/v1/admin/shaping/suspensions                 {scope, name, reason, duration}
    DELETE /api/v1/admin/shaping/suspensions/{scope}/{name}  lift one
    GET    /api/v1/admin/shaping/sites/{site}?source=S       `Shaper.explain` of source->site
                                                             (source: "default" if not given)

Without a shaper in this process (`make_app(shaper=None)`) every route answers 503
`shaping_unavailable`.
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
from mta.http.errors import ApiError, json_object, positive_duration
from mta.shaping.egress import DEFAULT_SOURCE
from mta.shaping.suspend import SCOPES

__all__ = ["OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()

# Site, source and tenant names: DNS-ish names and identifiers; a path is "source->site".
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,253}$")
_PATH_RE = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,253}->[A-Za-z0-9_.:\[\]-]{1,253}$")
# An operator's reason is shown in explanations and logs: one line, bounded.
_MAX_REASON = 500


def _shaper(request: web.Request) -> Any:
    shaper = request.app[state.SHAPER]
    if shaper is None:
        raise ApiError(503, "shaping_unavailable", "no shaper runs in this process")
    return shaper


def _scope_name(scope: Any, name: Any) -> tuple[str, str]:
    if scope not in SCOPES:
        raise ApiError(400, "bad_scope", f"scope must be one of {', '.join(SCOPES)}")
    pattern = _PATH_RE if scope == "path" else _NAME_RE
    if not isinstance(name, str) or not pattern.match(name):
        hint = " (a path is SOURCE->SITE)" if scope == "path" else ""
        raise ApiError(400, "bad_name", f"not a {scope} name: {name!r}{hint}")
    return scope, name.lower() if scope == "site" else name


@routes.get("/api/v1/admin/shaping/suspensions")
async def suspensions_list(request: web.Request) -> web.Response:
    active = sorted(_shaper(request).suspensions.active(), key=lambda s: (s.scope, s.name))
    return web.json_response({"suspensions": [s.as_dict() for s in active]})


@routes.post("/api/v1/admin/shaping/suspensions")
async def suspensions_add(request: web.Request) -> web.Response:
    shaper = _shaper(request)
    doc = await json_object(request)
    unknown = set(doc) - {"scope", "name", "reason", "duration"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    scope, name = _scope_name(doc.get("scope"), doc.get("name"))
    reason = doc.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ApiError(400, "missing_field", "reason is required")
    if len(reason) > _MAX_REASON or "\n" in reason or "\r" in reason:
        raise ApiError(400, "bad_field", f"reason: one line, at most {_MAX_REASON} characters")
    s = shaper.suspensions.suspend(scope, name, reason.strip(),
                                   positive_duration(doc.get("duration")))
    return web.json_response(s.as_dict(), status=201)


@routes.delete("/api/v1/admin/shaping/suspensions/{scope}/{name}")
async def suspensions_lift(request: web.Request) -> web.Response:
    shaper = _shaper(request)
    scope, name = _scope_name(request.match_info["scope"], request.match_info["name"])
    s = shaper.suspensions.lift(scope, name)
    if s is None:
        raise ApiError(404, "not_found", f"no suspension of {scope} {name}")
    return web.json_response({**s.as_dict(), "result": "lifted"})


@routes.get("/api/v1/admin/shaping/sites/{site}")
async def site_explain(request: web.Request) -> web.Response:
    shaper = _shaper(request)
    _, site = _scope_name("site", request.match_info["site"])
    _, source = _scope_name("source", request.query.get("source", DEFAULT_SOURCE))
    tenant = request.query.get("tenant") or None
    if tenant is not None:
        _scope_name("tenant", tenant)
    # The same call the dispatcher makes when it builds the site's pool, so the rules shown
    # are the ones delivery uses (and the state is keyed by the same "source->site").
    path = shaper.path(source, site)
    return web.json_response(await shaper.explain(path, tenant))


# The OpenAPI description of these routes (openapi.py puts the document together).
_SHAPING_ERRORS = _errors((400, "bad_scope, bad_name"),
                          (503, "shaping_unavailable: no shaper in this process"))
_SCOPE = _path_param("scope", "What is suspended", {"type": "string", "enum": [
    "site", "source", "path", "tenant"]})
_SUSPENSION = {"type": "object", "properties": {
    "scope": {"type": "string"}, "name": {"type": "string"}, "reason": {"type": "string"},
    "since": {"type": "number"}, "until": {"type": ["number", "null"]}}}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/shaping/suspensions": {
        "get": _op("Active shaping suspensions", _ok("Suspensions", {
            "type": "object", "properties": {"suspensions": {
                "type": "array", "items": _SUSPENSION}}}) | _SHAPING_ERRORS, tag="shaping"),
        "post": _op("Suspend sending to a site, from a source, on a path or for a tenant",
                    _ok("The suspension", _SUSPENSION, "201") | _SHAPING_ERRORS
                    | _errors((400, "bad_scope, bad_name, bad_json, bad_request, "
                                    "unknown_field, missing_field, bad_field")),
                    tag="shaping", body={
                        "type": "object", "required": ["scope", "name", "reason"],
                        "properties": {
                            "scope": {"type": "string", "enum": [
                                "site", "source", "path", "tenant"]},
                            "name": {"type": "string", "description": "site, source, "
                                     "SOURCE->SITE or tenant"},
                            "reason": {"type": "string"},
                            "duration": {"oneOf": [
                                {"type": "number", "description": "seconds"},
                                {"type": "string", "description": "\"1h\", \"30m\""},
                                {"type": "null", "description": "until lifted"}]}}})},
    "/api/v1/admin/shaping/suspensions/{scope}/{name}": {"delete": _op(
        "Lift a shaping suspension", _ok("Lifted", _SUSPENSION) | _SHAPING_ERRORS
        | _errors((404, "not_found: no such suspension")), tag="shaping",
        params=[_SCOPE, _path_param("name", "site, source, SOURCE->SITE or tenant")])},
    "/api/v1/admin/shaping/sites/{site}": {"get": _op(
        "Effective rules of a path (with the layer each value came from), its throttles, "
        "connections, adaptive window and suspension", _ok("Explanation")
        | _SHAPING_ERRORS, tag="shaping", params=[
            _path_param("site", "Site (MX rollup) name"),
            _query("source", "Egress source", {"type": "string", "default": "default"}),
            _query("tenant", "Also check this tenant's suspension", {"type": "string"})])},
}
