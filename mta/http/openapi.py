"""The OpenAPI 3.1 document of the HTTP API, served at GET /api/v1/openapi.json.

A static dict put together here from the paths each route module describes beside its
routes (`admin_*.OPENAPI_PATHS`, written with apidoc.py's building blocks), the shared
schemas and the injection, metrics and unsubscribe routes; tests/http checks that every
aiohttp route is in it and every path in it is a route, and that it validates.
Error codes listed per operation are the stable `error.code` values clients may test.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http import (
    admin_console,
    admin_content,
    admin_domains,
    admin_gdpr,
    admin_intake,
    admin_keys,
    admin_licence,
    admin_policy,
    admin_queue,
    admin_reputation,
    admin_shaping,
    admin_suppressions,
    admin_webhooks,
)
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import path_param as _path_param
from mta.http.apidoc import ref as _ref

__all__ = ["DOCUMENT", "routes"]

routes = web.RouteTableDef()

_JSON = "application/json"

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
        **admin_queue.OPENAPI_PATHS,
        **admin_policy.OPENAPI_PATHS,
        **admin_reputation.OPENAPI_PATHS,
        **admin_licence.OPENAPI_PATHS,
        **admin_shaping.OPENAPI_PATHS,
        **admin_content.OPENAPI_PATHS,
        **admin_suppressions.OPENAPI_PATHS,
        **admin_webhooks.OPENAPI_PATHS,
        **admin_domains.OPENAPI_PATHS,
        **admin_intake.OPENAPI_PATHS,
        **admin_keys.OPENAPI_PATHS,
        **admin_gdpr.OPENAPI_PATHS,
        **admin_console.OPENAPI_PATHS,
    },
}


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
