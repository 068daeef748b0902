"""/api/v1/suppressions: the suppression lists (mta.suppress), for operators and tenants.

    GET    /api/v1/suppressions?scope=S&cursor=C&limit=N   one page, in (scope, address)
                                                           order; "next" is the next cursor
    POST   /api/v1/suppressions                            {address, scope, reason, source,
                                                            expires_at} -> 201 the entry
    DELETE /api/v1/suppressions/{scope}/{address}          remove one (404 if absent)
    POST   /api/v1/suppressions/import?scope=S             many: JSON {"entries": [...]},
                                                           text/csv or application/x-ndjson

Who may: the admin token (or the local admin socket) sees and edits every scope (default
"global"); a tenant's API key (the keys of POST /api/v1/messages) only its own scope, which
is then the default, and any other scope is 403 `forbidden`. Without suppression lists in
this process every route answers 503 `suppression_unavailable`.
"""

from __future__ import annotations

import io
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
from mta.suppress.entry import GLOBAL, EntryError, make_entry, parse_lines, valid_scope

__all__ = ["OPENAPI_PATHS", "SUPPRESSIONS", "routes"]

routes = web.RouteTableDef()

SUPPRESSIONS: web.AppKey[Any] = web.AppKey("suppressions", object)

# An import request: the CLI sends 20,000 entries at a time, a script may send more.
_MAX_IMPORT_BODY = 256 * 1024 * 1024
_MAX_ERRORS = 100  # reported per import; the count covers every one


def _lists(request: web.Request) -> Any:
    s = request.app.get(SUPPRESSIONS)
    if s is None:
        raise ApiError(503, "suppression_unavailable", "no suppression lists in this process")
    return s


def _scope(tenant: str | None, given: Any, *, default: str | None) -> str | None:
    """The scope a caller acts on: its own (a tenant), or the one asked for (operator)."""
    if given is not None and (not isinstance(given, str) or not valid_scope(given)):
        raise ApiError(400, "bad_scope", f"not a scope: {given!r}")
    if tenant is None:
        return given if given is not None else default
    if given is not None and given != tenant:
        raise ApiError(403, "forbidden", f"a key of tenant {tenant!r} may only use scope "
                       f"{tenant!r}")
    return tenant


@routes.get("/api/v1/suppressions")
async def suppressions_list(request: web.Request) -> web.Response:
    tenant = await caller(request)
    lists = _lists(request)
    scope = _scope(tenant, request.query.get("scope"), default=None)
    try:
        limit = int(request.query.get("limit", "100"))
        entries, cursor = await lists.list(scope, request.query.get("cursor"), limit)
    except ValueError as e:
        raise ApiError(400, "bad_request", str(e)) from None
    return web.json_response({"entries": [e.as_dict() for e in entries], "next": cursor})


@routes.post("/api/v1/suppressions")
async def suppressions_add(request: web.Request) -> web.Response:
    tenant = await caller(request)
    lists = _lists(request)
    doc = await json_object(request)
    unknown = set(doc) - {"address", "scope", "reason", "source", "expires_at"}
    if unknown:
        raise ApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    scope = _scope(tenant, doc.get("scope"), default=GLOBAL)
    try:
        entry = make_entry({**doc, "created_at": None}, scope=scope, reason="manual",
                           source="api", now=lists.clock.now())
        if entry.expires_at is None and "expires_at" not in doc:  # the reason's default
            entry = lists.entry(entry.scope, entry.address, entry.reason, entry.source)
    except (EntryError, ValueError) as e:
        raise ApiError(400, "bad_field", str(e)) from None
    await lists.add(entry)
    return web.json_response(entry.as_dict(), status=201)


@routes.delete("/api/v1/suppressions/{scope}/{address}")
async def suppressions_remove(request: web.Request) -> web.Response:
    tenant = await caller(request)
    lists = _lists(request)
    scope = _scope(tenant, request.match_info["scope"], default=GLOBAL)
    address = request.match_info["address"]
    try:
        removed = await lists.remove(scope, address)
    except ValueError as e:
        raise ApiError(400, "bad_address", str(e)) from None
    if not removed:
        raise ApiError(404, "not_found", f"{address} is not on list {scope!r}")
    return web.json_response({"scope": scope, "address": address, "result": "removed"})


async def _body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > _MAX_IMPORT_BODY:
        raise ApiError(413, "payload_too_large", f"over {_MAX_IMPORT_BODY} bytes; send "
                       "the entries in several requests")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1024 * 1024):
        size += len(chunk)
        if size > _MAX_IMPORT_BODY:
            raise ApiError(413, "payload_too_large", f"over {_MAX_IMPORT_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@routes.post("/api/v1/suppressions/import")
async def suppressions_import(request: web.Request) -> web.Response:
    """Every valid entry is added (replacing: importing the same file twice changes
    nothing); the invalid ones are counted and the first _MAX_ERRORS reported by line (or,
    for JSON, by index from 1)."""
    tenant = await caller(request)
    lists = _lists(request)
    scope = _scope(tenant, request.query.get("scope"), default=None)
    ctype = request.content_type
    fmt = {"application/json": "json", "text/csv": "csv", "application/x-ndjson": "jsonl",
           "application/jsonl": "jsonl"}.get(ctype)
    if fmt is None:
        raise ApiError(415, "unsupported_media_type", "application/json, text/csv or "
                       "application/x-ndjson")
    raw = await _body(request)
    now = lists.clock.now()
    entries, errors, bad = [], [], 0
    if fmt == "json":
        import json

        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None
        items = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(items, list):
            raise ApiError(400, "bad_request", 'the body must be {"entries": [...]}')
        reason = doc.get("reason") or "import"
        source = doc.get("source") or "import"
        results: Any = ((i, _one(d, scope, reason, source, now))
                        for i, d in enumerate(items, 1))
    else:
        try:
            text = io.StringIO(raw.decode("utf-8"), newline="")
        except UnicodeDecodeError:
            raise ApiError(400, "bad_request", "the body is not UTF-8") from None
        results = parse_lines(text, fmt, scope=scope, now=now)
    for n, result in results:
        if isinstance(result, EntryError):
            bad += 1
            if len(errors) < _MAX_ERRORS:
                errors.append({"line": n, "error": str(result)})
        else:
            entries.append(result)
    imported = await lists.import_entries(entries)
    return web.json_response({"imported": imported, "invalid": bad, "errors": errors})


def _one(doc: Any, scope: str | None, reason: str, source: str,
         now: float) -> Any:
    if isinstance(doc, str):
        doc = {"address": doc}
    if not isinstance(doc, dict):
        return EntryError("not an object")
    try:
        return make_entry(doc, scope=scope, reason=reason, source=source, now=now)
    except EntryError as e:
        return e


# The OpenAPI description of these routes (openapi.py puts the document together).
# /api/v1/suppressions (mta.http.admin_suppressions): the admin token sees every list, a
# tenant's API key only its own.
_SUPPRESSION = {"type": "object", "properties": {
    "scope": {"type": "string", "description": '"global" or a tenant name'},
    "address": {"type": "string", "description": 'an address, or "@domain" for a whole '
                                                 "domain"},
    "reason": {"type": "string", "enum": ["hard_bounce", "complaint", "unsubscribe",
                                          "manual", "import"]},
    "source": {"type": "string"}, "created_at": {"type": "number"},
    "expires_at": {"type": ["number", "null"], "description": "null: until removed"}}}
_SUPPRESSION_ERRORS = _errors(
    (400, "bad_scope, bad_request, bad_json, bad_field, unknown_field, bad_address"),
    (401, "unauthorized: neither the admin token nor a tenant's API key"),
    (403, "forbidden: a tenant's key used on another scope"),
    (503, "suppression_unavailable"))


def _sop(summary: str, responses: dict[str, Any], **kw: Any) -> dict[str, Any]:
    op = _op(summary, responses | _SUPPRESSION_ERRORS, admin=False, tag="suppression", **kw)
    op["security"] = _ADMIN_OR_KEY
    return op


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/suppressions": {
        "get": _sop("One page of active entries, in (scope, address) order", _ok("A page", {
            "type": "object", "properties": {
                "entries": {"type": "array", "items": _SUPPRESSION},
                "next": {"type": ["string", "null"],
                         "description": "cursor of the next page; null at the end"}}}),
            params=[_query("scope", "one list (a tenant key: its own, the default)",
                           {"type": "string"}),
                    _query("cursor", "`next` of the previous page", {"type": "string"}),
                    _query("limit", "entries per page (1-10000, default 100)",
                           {"type": "integer", "minimum": 1, "maximum": 10000})]),
        "post": _sop("Suppress an address or a domain", _ok("Added", _SUPPRESSION, "201"),
                     body={"type": "object", "required": ["address"], "properties": {
                         "address": {"type": "string"}, "scope": {"type": "string"},
                         "reason": {"type": "string"}, "source": {"type": "string"},
                         "expires_at": {"oneOf": [{"type": "number"}, {"type": "string"},
                                                  {"type": "null"}]}}})},
    "/api/v1/suppressions/import": {"post": _sop(
        "Add many entries (idempotent): JSON {entries: [...]}, text/csv or "
        "application/x-ndjson", _ok("Imported", {"type": "object", "properties": {
            "imported": {"type": "integer"}, "invalid": {"type": "integer"},
            "errors": {"type": "array", "items": {"type": "object", "properties": {
                "line": {"type": "integer"}, "error": {"type": "string"}}}}}})
        | _errors((413, "payload_too_large"), (415, "unsupported_media_type")),
        body={"type": "object", "properties": {"entries": {"type": "array"}}},
        params=[_query("scope", "put every entry on this list", {"type": "string"})])},
    "/api/v1/suppressions/{scope}/{address}": {"delete": _sop(
        "Remove an entry", _ok("Removed") | _errors((404, "not_found")),
        params=[_path_param("scope", '"global" or a tenant name'),
                _path_param("address", 'the address or "@domain"')])},
}
