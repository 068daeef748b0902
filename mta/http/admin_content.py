"""/api/v1/admin/content/...: the content rules in force, and a dry run of a message.

    GET  /api/v1/admin/content/rules   the [[content.rules]] (name, kind, action, score,
                                       text, zone), the thresholds and the scanner settings
    POST /api/v1/admin/content/check   a message through the rules (and the scanner) as the
                                       end of DATA would run it: the verdict, nothing
                                       stored, no event. The body is the raw message
                                       (Content-Type message/rfc822, up to [smtp]
                                       max_message_size; ?sender= &recipient= &tenant=
                                       for the scanner's envelope), or JSON
                                       {"message": "...", "sender", "recipients", "tenant"}.

    POST   /api/v1/admin/content/rules         add a rule at run time: a JSON object, the
                                               same table as a [[content.rules]] entry
                                               (201; 400 bad_rule with the config's
                                               message; 409 rule_exists / rule_in_config)
    DELETE /api/v1/admin/content/rules/{name}  remove a run-time rule (404 no_such_rule;
                                               409 rule_in_config: edit the file)

Rules from the config file are reloaded on SIGHUP; run-time rules live in the policy
store, run after the file's, and hold on every node within [content] rules_poll
(mta.content.runtime). The GET lists both (each rule's `source`) and the run-time
records (`runtime`: who added each and when). The filter is the ingest service's
(`ingress.content`); without one in this process every route answers 503
`content_unavailable`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.content.runtime import RuleError
from mta.http import state
from mta.http.callers import is_local
from mta.http.errors import ApiError, json_object
from mta.queue.envelope import Envelope, Recipient

__all__ = ["OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()


def _filter(request: web.Request) -> Any:
    content = getattr(request.app[state.INGRESS], "content", None)
    if content is None:
        raise ApiError(503, "content_unavailable", "no content filter runs in this process")
    return content


def _by(request: web.Request) -> str:
    return "admin-socket" if is_local(request) else "admin-api"


def _runtime(request: web.Request) -> Any:
    runtime = getattr(_filter(request), "runtime", None)
    if runtime is None:
        raise ApiError(503, "content_unavailable", "run-time rules need the policy store")
    return runtime


@routes.get("/api/v1/admin/content/rules")
async def content_rules(request: web.Request) -> web.Response:
    content = _filter(request)
    runtime = getattr(content, "runtime", None)
    return web.json_response({**content.describe(),
                              "runtime": runtime.describe() if runtime is not None else []})


@routes.post("/api/v1/admin/content/rules")
async def content_rule_add(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    doc = await json_object(request)
    try:
        rec = await runtime.add(doc, by=_by(request))
    except RuleError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    return web.json_response(rec, status=201)


@routes.delete("/api/v1/admin/content/rules/{name}")
async def content_rule_remove(request: web.Request) -> web.Response:
    runtime = _runtime(request)
    name = request.match_info["name"]
    try:
        await runtime.remove(name, by=_by(request))
    except RuleError as e:
        raise ApiError(e.status, e.code, str(e)) from None
    return web.json_response({"removed": name})


async def _raw_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "message_too_large", f"the message is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "message_too_large", f"the message is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _strings(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "bad_field", f"{key}: a string or a list of strings")
    return value


@routes.post("/api/v1/admin/content/check")
async def content_check(request: web.Request) -> web.Response:
    content = _filter(request)
    if request.content_type == "application/json":
        doc = await json_object(request)
        unknown = set(doc) - {"message", "sender", "recipients", "tenant"}
        if unknown:
            raise ApiError(400, "unknown_field",
                           f"unknown field(s): {', '.join(sorted(unknown))}")
        message = doc.get("message")
        if not isinstance(message, str) or not message:
            raise ApiError(400, "missing_field", "message (the raw message text) is required")
        data = message.encode("utf-8")
        sender, recipients = doc.get("sender") or "", _strings(doc.get("recipients"),
                                                               "recipients")
        tenant = doc.get("tenant") or "default"
    else:
        data = await _raw_body(request, request.app[state.INJECT_LIMITS].max_message_size)
        q = request.query
        sender, recipients = q.get("sender", ""), q.getall("recipient", [])
        tenant = q.get("tenant", "default")
    if not isinstance(sender, str) or not isinstance(tenant, str):
        raise ApiError(400, "bad_field", "sender and tenant are strings")
    if not data:
        raise ApiError(400, "missing_field", "an empty message")
    # The stored form: CRLF line ends, as SMTP and the injection API hand messages over.
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    envelope = Envelope(tenant=tenant, mail_from=sender,
                        recipients=[Recipient(r) for r in recipients])
    verdict = await content.check(envelope, data, emit=False)
    return web.json_response(verdict.as_dict())


# The OpenAPI description of these routes (mta.http.openapi merges it into the document).
_ERROR = {"$ref": "#/components/schemas/Error"}
_ADMIN = [{"adminToken": []}]


def _errors(*pairs: tuple[int, str]) -> dict[str, Any]:
    return {str(status): {"description": text, "content": {"application/json": {
        "schema": _ERROR}}} for status, text in pairs}


_VERDICT = {"type": "object", "properties": {
    "action": {"type": "string", "enum": ["none", "tag", "hold", "tempfail", "reject"]},
    "rules": {"type": "array", "items": {"type": "string"}},
    "score": {"type": "number"},
    "reply": {"type": ["string", "null"], "description": "reject / tempfail: the SMTP reply"},
    "reason": {"type": "string"},
    "header": {"type": ["string", "null"], "description": "tag / hold: the header added"},
    "scanner": {"type": ["object", "null"], "description": "rspamd's action, score and "
                "symbols, or {\"error\"}"},
    "listings": {"type": "array", "items": {"type": "object", "properties": {
        "host": {"type": "string"}, "zone": {"type": "string"},
        "code": {"type": "string"}}}}}}

_RUNTIME = {"type": "object", "properties": {
    "name": {"type": "string"}, "rule": {"type": "object"},
    "added": {"type": "number", "description": "Unix time"},
    "by": {"type": "string"},
    "active": {"type": "boolean", "description": "false: the config has a rule of this "
               "name, which runs instead"}}}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/content/rules": {"get": {
        "summary": "The content rules, thresholds and scanner settings in force",
        "tags": ["content"], "security": _ADMIN,
        "responses": {"200": {"description": "Rules", "content": {"application/json": {
            "schema": {"type": "object", "properties": {
                "rules": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "kind": {"type": "string"},
                    "action": {"type": "string"}, "score": {"type": "number"},
                    "text": {"type": "string"}, "zone": {"type": "string"}}}},
                "thresholds": {"type": "object"},
                "scanner": {"type": ["object", "null"]},
                "runtime": {"type": "array", "items": _RUNTIME}}}}}},
            **_errors((401, "unauthorized"),
                      (503, "content_unavailable: no content filter in this process"))}},
        "post": {
        "summary": "Add a content rule at run time (kept in the policy store, on every node)",
        "tags": ["content"], "security": _ADMIN,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["name"],
            "description": "A [[content.rules]] table: name, one kind of match (header + "
                           "pattern, body, attachment_extensions / attachment_types, "
                           "url_blocklist, max_size, max_parts, require_headers), action, "
                           "score, text"}}}},
        "responses": {"201": {"description": "Added", "content": {"application/json": {
            "schema": _RUNTIME}}},
            **_errors((400, "bad_json, bad_rule (the config's own message)"),
                      (401, "unauthorized"),
                      (409, "rule_exists, rule_in_config, too_many_rules"),
                      (503, "content_unavailable"))}}},
    "/api/v1/admin/content/rules/{name}": {"delete": {
        "summary": "Remove a content rule added at run time",
        "tags": ["content"], "security": _ADMIN,
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "Removed", "content": {"application/json": {
            "schema": {"type": "object", "properties": {"removed": {"type": "string"}}}}}},
            **_errors((401, "unauthorized"), (404, "no_such_rule"),
                      (409, "rule_in_config: the rule is the config file's"),
                      (503, "content_unavailable"))}}},
    "/api/v1/admin/content/check": {"post": {
        "summary": "Dry run: a message through the content rules and scanner (nothing "
                   "stored, no event)",
        "tags": ["content"], "security": _ADMIN,
        "parameters": [
            {"name": n, "in": "query", "required": False, "description": d,
             "schema": {"type": "string"}}
            for n, d in (("sender", "Envelope sender (raw body only)"),
                         ("recipient", "Envelope recipient, repeatable (raw body only)"),
                         ("tenant", "Tenant (raw body only)"))],
        "requestBody": {"required": True, "content": {
            "message/rfc822": {"schema": {"type": "string"}},
            "application/json": {"schema": {
                "type": "object", "required": ["message"], "additionalProperties": False,
                "properties": {"message": {"type": "string"}, "sender": {"type": "string"},
                               "recipients": {"type": "array",
                                              "items": {"type": "string"}},
                               "tenant": {"type": "string"}}}}}},
        "responses": {"200": {"description": "The verdict", "content": {
            "application/json": {"schema": _VERDICT}}},
            **_errors((400, "bad_json, bad_request, missing_field, unknown_field, bad_field"),
                      (401, "unauthorized"),
                      (413, "message_too_large: over [smtp] max_message_size"),
                      (503, "content_unavailable: no content filter in this process"))}}},
}
