"""JSON errors with a stable code: every 4xx/5xx the API sends has this shape.

    {"error": {"code": "not_found", "message": "no message 0123"}}
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from mta.config import parse_duration

__all__ = ["ApiError", "error_middleware", "json_error", "json_object", "positive_duration"]

log = logging.getLogger("mta.http")


class ApiError(Exception):
    """`extra` adds fields to the error object (e.g. the SMTP "reply" behind a refusal);
    `headers` are sent with it (e.g. WWW-Authenticate with a 401)."""

    def __init__(self, status: int, code: str, message: str, *,
                 extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra or {}
        self.headers = headers


def json_error(status: int, code: str, message: str, *, extra: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **(extra or {})}},
                             status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.code, e.message, extra=e.extra, headers=e.headers)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                401: "unauthorized", 415: "unsupported_media_type"}.get(e.status, "http_error")
        return json_error(e.status, code, e.reason)
    except Exception:
        # A bug must still answer in the API's shape, and be logged with its traceback.
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal_error", "internal error; see the server log")


async def json_object(request: web.Request) -> dict:
    """The request body as a JSON object, or the 400 that says why not."""
    try:
        doc = await request.json()
    except ValueError:
        raise ApiError(400, "bad_json", "the body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return doc


def positive_duration(value: Any) -> float | None:
    """A request's "duration": seconds or "2h"-style text; None when absent or null; the
    400 that says why otherwise."""
    if value is None:
        return None
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise ApiError(400, "bad_field", f"duration: {e}") from None
    if seconds <= 0:
        raise ApiError(400, "bad_field", "duration: must be positive")
    return seconds
