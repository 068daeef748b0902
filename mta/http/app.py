"""The aiohttp application: admin API (bearer token), and later injection and /metrics.

`make_app(...)` builds it; the daemon runs it on every `[http] listen` address with an
aiohttp AppRunner (listeners are "sites", as in aiohttp's web_runner).
"""

from __future__ import annotations

import hmac

from aiohttp import web

from mta.http import admin_queue
from mta.http.errors import error_middleware, json_error

__all__ = ["make_app"]

# Admin requests carry small JSON bodies; injection has its own limit.
ADMIN_MAX_BODY = 1024 * 1024


@web.middleware
async def admin_auth_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path.startswith("/api/v1/admin"):
        token: str = request.app["admin_token"]
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        # An empty configured token disables the admin API rather than opening it.
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return json_error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)


def make_app(*, admin_token: str, queue_ops: admin_queue.QueueOps) -> web.Application:
    app = web.Application(middlewares=[error_middleware, admin_auth_middleware],
                          client_max_size=ADMIN_MAX_BODY)
    app["admin_token"] = admin_token
    app["queue_ops"] = queue_ops
    app.add_routes(admin_queue.routes)
    return app
