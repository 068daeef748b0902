"""The OpenAPI 3.1 document of the HTTP API, served at GET /api/v1/openapi.json.

A static dict, written by hand next to the routes it describes; tests/http checks that
every aiohttp route is in it and every path in it is a route, and that it validates.
Error codes listed per operation are the stable `error.code` values clients may test.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http.admin_content import OPENAPI_PATHS as _ADMIN_CONTENT_PATHS

__all__ = ["DOCUMENT", "routes"]

routes = web.RouteTableDef()

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _ok(description: str, schema: dict[str, Any] | None = None,
        status: str = "200") -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    body["content"] = {_JSON: {"schema": schema or {"type": "object"}}}
    return {status: body}


def _errors(*pairs: tuple[int, str]) -> dict[str, Any]:
    """(status, "code1, code2: when") -> responses with the Error schema."""
    return {str(status): {"description": text, "content": {_JSON: {"schema": _ref("Error")}}}
            for status, text in pairs}


def _op(summary: str, responses: dict[str, Any], *, admin: bool = True,
        body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
        tag: str = "admin") -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if admin:
        op["security"] = [{"adminToken": []}]
        op["responses"] = {**responses, **_errors((401, "unauthorized"))}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


_ID = _path_param("id", "Queue id", {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"})
_TENANT = _path_param("name", "Tenant name",
                      {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})
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
_QUEUE_ERRORS = _errors((400, "bad_id"), (404, "not_found"),
                        (503, "queue_unavailable"))
_DATE = {"oneOf": [{"type": "string", "description": "2026-12-31 (through that day, in "
                    "[policy] timezone) or an ISO 8601 date-time"},
                   {"type": "number", "description": "POSIX seconds"}]}
_DURATION = {"oneOf": [{"type": "string", "description": "e.g. \"2h\", \"3d\""},
                       {"type": "number", "description": "seconds"}],
             "description": "Instead of until: ends this long from now (policy clock)"}
_ADDRESSES = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
              "description": "An address (\"a@example.com\" or \"Ann <a@example.com>\") or "
                             "a list of them"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "Stable, machine-readable"},
                "message": {"type": "string"},
                "reply": {"type": "string", "description": "The SMTP reply behind a "
                          "refusal, e.g. \"550 5.7.1 ...\""},
                "recipients": {"type": "array", "items": _ref("RecipientResult")}}}}},
    "RawMessage": {
        "type": "object", "required": ["raw", "from", "to"], "additionalProperties": False,
        "properties": {"raw": {"type": "string", "description": "RFC 5322 message; line "
                               "ends are normalized to CRLF"},
                       "from": {"type": "string", "description": "Envelope sender"},
                       "to": _ADDRESSES, "dsn": _ref("DsnRequest")}},
    "DsnRequest": {
        "type": "object", "additionalProperties": False,
        "description": "RFC 3461, as an SMTP client asks with NOTIFY, RET, ENVID and ORCPT",
        "properties": {
            "notify": {"oneOf": [{"type": "string", "description": '"NEVER", or a comma '
                                  "list of SUCCESS, FAILURE, DELAY"},
                                 {"type": "array", "items": {"type": "string", "enum": [
                                     "SUCCESS", "FAILURE", "DELAY", "NEVER"]}}]},
            "ret": {"type": "string", "enum": ["FULL", "HDRS"]},
            "envid": {"type": "string", "maxLength": 100,
                      "description": "your reference, returned in every DSN"},
            "orcpt": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "original recipient by envelope recipient "
                                     "(Original-Recipient in every DSN for it)"}}},
    "Attachment": {
        "type": "object", "required": ["filename", "content_base64"],
        "additionalProperties": False,
        "properties": {"filename": {"type": "string"},
                       "content_type": {"type": "string", "default": "application/octet-stream"},
                       "content_base64": {"type": "string", "contentEncoding": "base64"}}},
    "ComposedMessage": {
        "type": "object", "required": ["from"], "additionalProperties": False,
        "properties": {"from": {"type": "string"}, "to": _ADDRESSES, "cc": _ADDRESSES,
                       "bcc": _ADDRESSES, "subject": {"type": "string"},
                       "text": {"type": "string"}, "html": {"type": "string"},
                       "headers": {"type": "object",
                                   "additionalProperties": {"type": "string"}},
                       "attachments": {"type": "array", "items": _ref("Attachment")},
                       "dsn": _ref("DsnRequest")}},
    "RecipientResult": {
        "type": "object", "required": ["address", "accepted"],
        "properties": {"address": {"type": "string"}, "accepted": {"type": "boolean"},
                       "reply": {"type": "string"}}},
    "Injected": {
        "type": "object", "required": ["id", "recipients"],
        "properties": {"id": {"type": "string"},
                       "recipients": {"type": "array", "items": _ref("RecipientResult")}}},
    "Message": {"type": "object", "description": "A queued message and its recipients "
                "(mta.delivery.operations.message_json)"},
    "ActionResult": {"type": "object", "properties": {
        "id": {"type": "string"}, "result": {"type": "string"},
        "recipients": {"type": "integer"}}},
    "DomainSuspension": {"type": "object", "required": ["domain", "reason"], "properties": {
        "domain": {"type": "string"}, "id": {"type": "integer"}, "reason": {"type": "string"},
        "since": {"type": "number", "description": "POSIX seconds"},
        "until": {"type": ["number", "null"], "description": "POSIX seconds; null: until "
                  "lifted"}}},
    "Tenant": {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string"}, "plan": {"type": "string"}, "parent": {"type": "string"},
        "status": {"type": "string", "enum": ["active", "suspended"]},
        "pool": {"type": "string"}, "classes": {"type": "array", "items": {"type": "string"}},
        "default_class": {"type": "string"}, "prepaid": {"type": "boolean"},
        "limits": {"type": "object", "additionalProperties": {"type": ["integer", "null"]}}}},
}

_ADMIN_QUEUE_PATHS: dict[str, Any] = {
    "/api/v1/admin/queue": {"get": _op(
        "List queued messages, oldest first", _ok("Messages", {
            "type": "object", "properties": {"messages": {
                "type": "array", "items": _ref("Message")}}}) | _errors(
            (400, "bad_state, bad_limit"), (503, "queue_unavailable")),
        params=[_query("state", "Message state", {"type": "string", "enum": [
                    "queued", "held", "delivered", "bounced", "expired"]}),
                _query("limit", "At most this many", {"type": "integer", "minimum": 1,
                                                      "maximum": 10000, "default": 100}),
                _query("after", "Page after this id", {"type": "string"})])},
    "/api/v1/admin/queue-stats": {"get": _op(
        "Queue counts by state and site", _ok("Counts") | _errors(
            (503, "queue_unavailable")))},
    "/api/v1/admin/queue-shape": {"get": _op(
        "Queued recipients by site and age bucket (qshape), counted in the spool",
        _ok("{edges, rows: [site, held, bucket, recipients]}") | _errors(
            (400, "bad_edges"), (503, "queue_unavailable")),
        params=[{"name": "edges", "in": "query", "required": False,
                 "description": "Age bucket edges in minutes, rising, comma-separated",
                 "schema": {"type": "string"}},
                {"name": "tenant", "in": "query", "required": False,
                 "schema": {"type": "string"}}])},
    "/api/v1/admin/queue/flush": {"post": _op(
        "Retry every deferred recipient now", _ok("Flushed", _ref("ActionResult")) | _errors(
            (503, "queue_unavailable")))},
    "/api/v1/admin/queue/{id}": {
        "get": _op("Show one message", _ok("The message", _ref("Message")) | _QUEUE_ERRORS,
                   params=[_ID]),
        "delete": _op("Delete a message", _ok("Deleted", _ref("ActionResult"))
                      | _QUEUE_ERRORS, params=[_ID])},
    "/api/v1/admin/queue/{id}/explain": {"get": _op(
        "Why each recipient is where it is", _ok("Explanation") | _QUEUE_ERRORS,
        params=[_ID])},
    "/api/v1/admin/queue/{id}/{action}": {"post": _op(
        "Hold, release, bounce or flush one message",
        _ok("Done", _ref("ActionResult")) | _QUEUE_ERRORS,
        params=[_ID, _path_param("action", "What to do", {
            "type": "string", "enum": ["hold", "release", "bounce", "flush"]})])},
}

_REP_STATES = ["ok", "warned", "limited", "suspended_class", "suspended", "terminated"]
_REP_ERRORS = _errors((400, "bad_field, bad_json"), (404, "unknown_tenant"),
                      (503, "reputation_unavailable"))
_REP_STATE = {"type": "object", "properties": {
    "tenant": {"type": "string"}, "state": {"type": "string", "enum": _REP_STATES},
    "since": {"type": "number"}, "reason": {"type": "string"},
    "manual": {"type": "boolean", "description": "set by hand: stays until cleared"}}}
_REP_THRESHOLDS = {"type": "object", "description": "each key in effect ({value, source}): "
                   "hard_bounce, complaint, spam_block, min_sample, limited_per_hour, "
                   "suspend_class, exempt; source: \"[reputation]\", "
                   "\"[reputation.plans.P]\", \"[reputation.tenants.T]\", "
                   "\"run-time override of T\""}
_REPUTATION_PATHS: dict[str, Any] = {
    "/api/v1/admin/tenants/{name}/reputation": {
        "get": _op("The tenant's escalation state, the figures per window and its moves",
                   _ok("Reputation", {"type": "object", "properties": {
                       **_REP_STATE["properties"],
                       "figures_reach": {"type": "string", "enum": _REP_STATES},
                       "why": {"type": "string"},
                       "figures": {"type": "array", "items": {"type": "object"}},
                       "history": {"type": "array", "items": {"type": "object"}},
                       "thresholds": _REP_THRESHOLDS}})
                   | _REP_ERRORS, params=[_TENANT], tag="policy"),
        "post": _op("Move the tenant to a state by hand (it stays until cleared)",
                    _ok("The new state", _REP_STATE) | _REP_ERRORS, params=[_TENANT],
                    tag="policy", body={"type": "object", "required": ["state", "reason"],
                                        "properties": {
                                            "state": {"type": "string",
                                                      "enum": _REP_STATES[1:]},
                                            "reason": {"type": "string"}}})},
    "/api/v1/admin/tenants/{name}/reputation/clear": {"post": _op(
        "Back to ok; counts from before now no longer count", _ok("The new state", _REP_STATE)
        | _REP_ERRORS, params=[_TENANT], tag="policy", body={
            "type": "object", "required": ["reason"],
            "properties": {"reason": {"type": "string"}}})},
    "/api/v1/admin/tenants/{name}/reputation/thresholds": {"post": _op(
        "Set or drop keys of the tenant's run-time thresholds (evaluated at the next "
        "interval)", _ok("As GET .../reputation") | _REP_ERRORS, params=[_TENANT],
        tag="policy", body={"type": "object", "properties": {
            "set": {"type": "object", "description": "key -> value: a list of four "
                    "fractions (or \"0.001,0.002,0.003,0.005\"), a number, a class, a "
                    "boolean"},
            "unset": {"type": "array", "items": {"type": "string"},
                      "description": "keys to drop, or \"all\""}}})},
}

_ADMIN_POLICY_PATHS: dict[str, Any] = {
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

_SHAPING_ERRORS = _errors((400, "bad_scope, bad_name"),
                          (503, "shaping_unavailable: no shaper in this process"))
_SCOPE = _path_param("scope", "What is suspended", {"type": "string", "enum": [
    "site", "source", "path", "tenant"]})
_SUSPENSION = {"type": "object", "properties": {
    "scope": {"type": "string"}, "name": {"type": "string"}, "reason": {"type": "string"},
    "since": {"type": "number"}, "until": {"type": ["number", "null"]}}}

_ADMIN_SHAPING_PATHS: dict[str, Any] = {
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

_ADMIN_LICENCE_PATHS: dict[str, Any] = {
    "/api/v1/admin/licence": {"get": _op(
        "The licence in force and this month's usage", _ok("Licence status", {
            "type": "object", "properties": {
                "state": {"type": "string", "enum": [
                    "none", "valid", "expired", "not yet valid", "invalid"]},
                "problem": {"type": "string"}, "licensee": {"type": "string"},
                "id": {"type": ["string", "null"]}, "month": {"type": "string"},
                "used": {"type": "integer"},
                "volume": {"type": "integer", "description": "0 = unlimited"},
                "remaining": {"type": ["integer", "null"]}, "ratio": {"type": "number"},
                "max_connections": {"type": "integer"},
                "valid_from": {"type": ["string", "null"]},
                "valid_until": {"type": ["string", "null"]},
                "file": {"type": ["string", "null"]}, "timezone": {"type": "string"}}})
        | _errors((503, "policy_unavailable: no policy engine in this process")),
        tag="policy")},
}

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
_SUPPRESSION_SECURITY = [{"adminToken": []}, {"apiKey": []}]


def _sop(summary: str, responses: dict[str, Any], **kw: Any) -> dict[str, Any]:
    op = _op(summary, responses | _SUPPRESSION_ERRORS, admin=False, tag="suppression", **kw)
    op["security"] = _SUPPRESSION_SECURITY
    return op


_SUPPRESSION_PATHS: dict[str, Any] = {
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

# /api/v1/webhooks (mta.http.admin_webhooks): the admin token manages every endpoint, a
# tenant's API key only its own.
_WEBHOOK = {"type": "object", "properties": {
    "id": {"type": "string"}, "url": {"type": "string"},
    "tenant": {"type": ["string", "null"], "description": "null: every tenant's events"},
    "events": {"type": "array", "items": {"type": "string"},
               "description": '["*"]: every event'},
    "enabled": {"type": "boolean"}, "disabled_reason": {"type": "string"},
    "created_at": {"type": "number"}, "description": {"type": "string"},
    "added_by_tenant": {"type": "boolean"}}}
_WEBHOOK_BATCH = {"type": "object", "properties": {
    "seq": {"type": "integer"}, "endpoint": {"type": "string"},
    "webhook_id": {"type": "string"}, "events": {"type": "integer"},
    "created_at": {"type": "number"}, "attempts": {"type": "integer"},
    "last_error": {"type": "string"}}}
_WEBHOOK_ERRORS = _errors(
    (400, "bad_field, bad_json, bad_limit"),
    (401, "unauthorized: neither the admin token nor a tenant's API key"),
    (403, "forbidden: a tenant's key adding another tenant's endpoint"),
    (404, "not_found: no such endpoint (or another tenant's)"),
    (503, "webhooks_unavailable: [webhooks] enabled = false"))


def _wop(summary: str, responses: dict[str, Any], **kw: Any) -> dict[str, Any]:
    op = _op(summary, responses | _WEBHOOK_ERRORS, admin=False, tag="webhooks", **kw)
    op["security"] = _SUPPRESSION_SECURITY
    return op


_EP_ID = [_path_param("id", "the endpoint id (ep_...)")]
_WEBHOOK_PATHS: dict[str, Any] = {
    "/api/v1/webhooks": {
        "get": _wop("The endpoints (never their secrets)", _ok("Endpoints", {
            "type": "object", "properties": {
                "endpoints": {"type": "array", "items": _WEBHOOK}}})),
        "post": _wop("Add an endpoint; the reply holds its signing secret, once",
                     _ok("Added", {"allOf": [_WEBHOOK, {"type": "object", "properties": {
                         "secret": {"type": "string", "description": "whsec_..."}}}]},
                         "201") | _errors((409, "too_many_endpoints")),
                     body={"type": "object", "required": ["url"], "properties": {
                         "url": {"type": "string"}, "tenant": {"type": "string"},
                         "events": {"type": "array", "items": {"type": "string"}},
                         "description": {"type": "string"}}})},
    "/api/v1/webhooks/failed": {"get": _wop(
        "Batches that failed for good on this node", _ok("Failed batches", {
            "type": "object", "properties": {
                "failed": {"type": "array", "items": _WEBHOOK_BATCH}}}),
        params=[_query("endpoint", "one endpoint's", {"type": "string"}),
                _query("limit", "at most (default 100)", {"type": "integer"})])},
    "/api/v1/webhooks/replay": {"post": _wop(
        "Post failed batches again, with their webhook ids", _ok("Replayed", {
            "type": "object", "properties": {"replayed": {"type": "integer"}}}),
        body={"type": "object", "properties": {
            "endpoint": {"type": "string"},
            "webhook_ids": {"type": "array", "items": {"type": "string"}}}})},
    "/api/v1/webhooks/{id}": {
        "get": _wop("One endpoint", _ok("The endpoint", _WEBHOOK), params=_EP_ID),
        "delete": _wop("Remove an endpoint and its waiting batches", _ok("Removed"),
                       params=_EP_ID)},
    "/api/v1/webhooks/{id}/test": {"post": _wop(
        "Post a webhook_test event now, outside the outbox", _ok("The receiver's answer", {
            "type": "object", "properties": {
                "ok": {"type": "boolean"}, "status": {"type": "integer"},
                "error": {"type": "string"}, "seconds": {"type": "number"}}}),
        params=_EP_ID)},
    "/api/v1/webhooks/{id}/enable": {"post": _wop(
        "Enable a disabled endpoint again", _ok("The endpoint", _WEBHOOK), params=_EP_ID)},
}

# /api/v1/admin/gdpr (mta.http.admin_gdpr): export and erasure of one address, admin only.
_GDPR_BODY = {"type": "object", "required": ["address"], "properties": {
    "address": {"type": "string", "description": "the address, any case"}}}
_GDPR_ERRORS = _errors((400, "bad_json, bad_request, missing_field, unknown_field, "
                             "bad_address"),
                       (502, "worker_failed: another worker did not answer"),
                       (503, "gdpr_unavailable: no gdpr service in this process"))
_GDPR_PATHS: dict[str, Any] = {
    "/api/v1/admin/gdpr/export": {"post": _op(
        "Everything mta holds about an address: queued messages (as sender, recipient or "
        "named in a body), events (rotated files too), async reports, suppression entries, "
        "unique-recipient counts and ledger rows, webhook batches; one object per worker",
        _ok("The data, per worker", {"type": "object", "properties": {
            "address": {"type": "string"},
            "workers": {"type": "array", "items": {"type": "object", "properties": {
                "shard": {"type": "integer"}, "queue": {"type": "array"},
                "events": {"type": "array"}, "reports": {"type": "array"},
                "suppressions": {"type": "array"}, "policy": {"type": "object"},
                "webhooks": {"type": "array"}}}}}}) | _GDPR_ERRORS, body=_GDPR_BODY)},
    "/api/v1/admin/gdpr/erase": {"post": _op(
        "Erase an address everywhere (spool, events files, policy state, webhook outbox; "
        "SQLite files vacuumed); its suppression entries are kept as a keyed hash "
        "(`token`), so mail to it is still refused", _ok("What was removed, per worker", {
            "type": "object", "properties": {
                "address": {"type": "string"},
                "workers": {"type": "array", "items": {"type": "object", "properties": {
                    "shard": {"type": "integer"}, "token": {"type": "string"},
                    "queue": {"type": "object"}, "events": {"type": "object"},
                    "suppressions": {"type": "object"}, "policy": {"type": "object"},
                    "webhooks": {"type": "object"}}}}}}) | _GDPR_ERRORS, body=_GDPR_BODY)},
}

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

# /api/v1/admin/intake and /readyz (mta.http.admin_intake): `mta drain`.
_INTAKE_STATE = {"type": "object", "properties": {
    "accepting": {"type": "boolean"}, "since": {"type": "number",
                                                "description": "unix time of the switch"},
    "reason": {"type": "string"}}}
_INTAKE_PATHS: dict[str, Any] = {
    "/api/v1/admin/intake": {
        "get": _op("Whether new mail is accepted", _ok("Intake state", _INTAKE_STATE)
                   | _errors((503, "intake_unavailable")), tag="operations"),
        "post": _op("Drain (accepting false: SMTP 421 4.3.2, injection 503, delivery goes "
                    "on) or resume", _ok("The new state", _INTAKE_STATE)
                    | _errors((400, "bad_accepting, bad_reason"),
                              (503, "intake_unavailable")),
                    body={"type": "object", "required": ["accepting"], "properties": {
                        "accepting": {"type": "boolean"},
                        "reason": {"type": "string", "maxLength": 500}}},
                    tag="operations")},
    "/readyz": {"get": _op(
        "Readiness: 503 while intake is paused (draining)",
        _ok("Ready", {"type": "object", "properties": {
            "ready": {"type": "boolean"}, "accepting": {"type": "boolean"},
            "reason": {"type": "string"}}}) | _errors((503, "not ready: draining")),
        admin=False, tag="observability")},
}

_ADMIN_DOMAINS_PATHS: dict[str, Any] = {
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

_API_KEY = {"type": "object", "properties": {
    "id": {"type": "string", "description": "first 12 hex digits of the key's SHA-256"},
    "tenant": {"type": "string"}, "created": {"type": ["number", "null"]},
    "label": {"type": "string"},
    "source": {"type": "string", "enum": ["runtime", "config"]}}}
_KEY_ERRORS = _errors((400, "bad_tenant, bad_json, bad_request, bad_field, bad_id"),
                      (404, "not_found: no such tenant, or no such run-time key"),
                      (503, "policy_unavailable: no policy store in this process"))
_ADMIN_KEYS_PATHS: dict[str, Any] = {
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
_ADMIN_KEYS_PATHS["/api/v1/admin/users"] = {
    "get": _op("SMTP AUTH users: run-time and from the config (never their hashes)",
               _ok("Users", {"type": "object", "properties": {
                   "users": {"type": "array", "items": _USER}}}) | _USER_ERRORS, tag="keys"),
    "post": _op("Add a run-time SMTP AUTH user, effective at once on every node. Event "
                "user_added.", _ok("Added", _USER, "201") | _USER_ERRORS, tag="keys",
                body={"allOf": [_PASSWORD, {"type": "object", "required": ["name", "tenant"],
                                            "properties": {
                    "name": {"type": "string"}, "tenant": {"type": "string"},
                    "networks": {"type": "array", "items": {"type": "string"}}}}]})}
_ADMIN_KEYS_PATHS["/api/v1/admin/users/{name}/password"] = {"put": _op(
    "Set a run-time user's password. Event user_passwd.", _ok("Changed", _USER)
    | _USER_ERRORS, tag="keys", body=_PASSWORD, params=_USER_NAME)}
for _verb in ("disable", "enable"):
    _ADMIN_KEYS_PATHS[f"/api/v1/admin/users/{{name}}/{_verb}"] = {"post": _op(
        f"{_verb.capitalize()} a run-time user (its next AUTH on any node). Event "
        f"user_{_verb}d.", _ok("Changed", _USER) | _USER_ERRORS, tag="keys",
        params=_USER_NAME)}
_ADMIN_KEYS_PATHS["/api/v1/admin/users/{name}"] = {"delete": _op(
    "Remove a run-time user. Event user_removed.", _ok("Removed", {
        "type": "object", "properties": {"removed": _USER}}) | _USER_ERRORS, tag="keys",
    params=_USER_NAME)}

# --- console accounts (mta/http/admin_console.py) ------------------------------------------
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
_CONSOLE_PATHS: dict[str, Any] = {
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
# --- end of console accounts ----------------------------------------------------------------

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mta HTTP API", "version": "1",
             "description": "Injection (tenant API keys), administration (operator token), "
                            "Prometheus metrics. Every error is {\"error\": {\"code\", "
                            "\"message\"}} with a stable code. Limits: each API key and "
                            "the admin token (over TCP) has a request rate with a burst "
                            "and a cap on requests in flight ([http] api_*, admin_*); "
                            "past them 429 rate_limited with Retry-After, and every "
                            "answer carries RateLimit-Policy and RateLimit "
                            "(draft-ietf-httpapi-ratelimit-headers). An admin body over "
                            "[http] max_body is 413 payload_too_large with error.limit."},
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer",
                           "description": "[http] admin_token"},
            "apiKey": {"type": "http", "scheme": "bearer",
                       "description": "A tenant's API key"}}},
    "paths": {
        "/api/v1/messages": {"post": {
            "summary": "Submit a message: queued (durably) when the answer is 202",
            "tags": ["injection"], "security": [{"apiKey": []}],
            "requestBody": {"required": True, "content": {_JSON: {"schema": {
                "oneOf": [_ref("RawMessage"), _ref("ComposedMessage")]}}}},
            "responses": {
                **_ok("Queued; refused recipients are listed with their reply",
                      _ref("Injected"), "202"),
                **_errors(
                    (400, "bad_json, bad_request, missing_field, unknown_field, bad_field, "
                          "bad_address, bad_header, bad_attachment, bad_message, "
                          "too_many_recipients"),
                    (401, "unauthorized: missing or unknown API key"),
                    (413, "payload_too_large (request body), message_too_large ([smtp] "
                          "max_message_size)"),
                    (415, "unsupported_media_type: not application/json"),
                    (422, "sender_refused, no_recipients_accepted, message_refused "
                          "(permanent SMTP reply in error.reply)"),
                    (429, "sender_refused (transient: retry later); rate_limited (this "
                          "key is past [http] api_rate/api_burst or api_concurrency: "
                          "wait Retry-After seconds)"),
                    (503, "message_refused (transient: spool full), "
                          "injection_unavailable"))}}},
        "/metrics": {"get": {
            "summary": "Prometheus text exposition", "tags": ["observability"],
            "responses": {"200": {"description": "Metrics", "content": {
                "text/plain": {"schema": {"type": "string"}}}},
                **_errors((503, "metrics_unavailable"))}}},
        "/u/{token}": {
            "get": {"summary": "One-click unsubscribe: the confirmation page (never "
                               "unsubscribes)", "tags": ["unsubscribe"], "security": [],
                    "parameters": [_path_param("token", "the link's token")],
                    "responses": {"200": {"description": "HTML page with a POST button"},
                                  "404": {"description": "not a valid unsubscribe link"}}},
            "post": {"summary": "RFC 8058 one-click unsubscribe (body "
                                "List-Unsubscribe=One-Click)", "tags": ["unsubscribe"],
                     "security": [],
                     "parameters": [_path_param("token", "the link's token")],
                     "requestBody": {"content": {"application/x-www-form-urlencoded": {
                         "schema": {"type": "object", "properties": {
                             "List-Unsubscribe": {"type": "string",
                                                  "enum": ["One-Click"]}}}}}},
                     "responses": {"200": {"description": "unsubscribed"},
                                   "400": {"description": "not a one-click body"},
                                   "404": {"description": "not a valid unsubscribe link"}}}},
        "/api/v1/openapi.json": {"get": {
            "summary": "This document", "tags": ["observability"],
            "responses": _ok("OpenAPI 3.1")}},
        **_ADMIN_QUEUE_PATHS,
        **_ADMIN_POLICY_PATHS,
        **_REPUTATION_PATHS,
        **_ADMIN_LICENCE_PATHS,
        **_ADMIN_SHAPING_PATHS,
        **_ADMIN_CONTENT_PATHS,
        **_SUPPRESSION_PATHS,
        **_WEBHOOK_PATHS,
        **_ADMIN_DOMAINS_PATHS,
        **_INTAKE_PATHS,
        **_ADMIN_KEYS_PATHS,
        **_GDPR_PATHS,
        **_CONSOLE_PATHS,
    },
}


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
