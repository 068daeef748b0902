"""Building blocks of the OpenAPI 3.1 document (openapi.py): each admin_* module describes
its own routes with them, beside the routes (its OPENAPI_PATHS), and openapi.py puts the
document together."""

from __future__ import annotations

from typing import Any

__all__ = ["ADMIN_OR_KEY", "DATE", "DURATION", "JSON", "TENANT", "errors", "ok", "op",
           "path_param", "query", "ref"]

JSON = "application/json"
# Routes a tenant's API key may call for itself, and the admin token for everyone.
ADMIN_OR_KEY = [{"adminToken": []}, {"apiKey": []}]


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def ok(description: str, schema: dict[str, Any] | None = None,
       status: str = "200") -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    body["content"] = {JSON: {"schema": schema or {"type": "object"}}}
    return {status: body}


def errors(*pairs: tuple[int, str]) -> dict[str, Any]:
    """(status, "code1, code2: when") -> responses with the Error schema."""
    return {str(status): {"description": text, "content": {JSON: {"schema": ref("Error")}}}
            for status, text in pairs}


def op(summary: str, responses: dict[str, Any], *, admin: bool = True,
       body: dict[str, Any] | None = None, params: list[dict[str, Any]] | None = None,
       tag: str = "admin") -> dict[str, Any]:
    """One operation; `admin`: behind the admin token (401 unauthorized without it)."""
    out: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if admin:
        out["security"] = [{"adminToken": []}]
        out["responses"] = {**responses, **errors((401, "unauthorized"))}
    if body is not None:
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    if params:
        out["parameters"] = params
    return out


def path_param(name: str, description: str, schema: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


# Shared by the policy and reputation routes.
TENANT = path_param("name", "Tenant name",
                    {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"})
DATE = {"oneOf": [{"type": "string", "description": "2026-12-31 (through that day, in "
                   "[policy] timezone) or an ISO 8601 date-time"},
                  {"type": "number", "description": "POSIX seconds"}]}
DURATION = {"oneOf": [{"type": "string", "description": "e.g. \"2h\", \"3d\""},
                      {"type": "number", "description": "seconds"}],
            "description": "Instead of until: ends this long from now (policy clock)"}
