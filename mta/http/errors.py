"""JSON errors with a stable code: every 4xx/5xx the API sends has this shape.

    {"error": {"code": "not_found", "message": "no message 0123"}}
"""

from __future__ import annotations

from aiohttp import web

__all__ = ["ApiError", "error_middleware", "json_error"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except ApiError as e:
        return json_error(e.status, e.code, e.message)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
                401: "unauthorized"}.get(e.status, "http_error")
        return json_error(e.status, code, e.reason)
