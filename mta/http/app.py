"""The aiohttp application: admin API (bearer token over TCP, none needed over the local
admin socket), injection (tenant API keys), /metrics and the OpenAPI document.

`make_app(...)` builds it; the daemon runs it on every `[http] listen` address with an
aiohttp AppRunner (listeners are "sites", as in aiohttp's web_runner). One module per route
family: admin_queue, admin_policy, admin_licence, admin_shaping, inject, scrape; openapi.py
describes them all.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
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
    inject,
    openapi,
    ratelimit,
    relay,
    scrape,
    state,
    unsubscribe,
)
from mta.http.callers import is_local
from mta.http.compose import Limits
from mta.http.errors import error_middleware, json_error
from mta.http.ratelimit import RequestLimits
from mta.observe.metrics import Metrics
from mta.policy.kv import kv_for

__all__ = ["Limits", "RequestLimits", "make_app"]


@web.middleware
async def admin_auth_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    if request.path.startswith("/api/v1/admin") and not is_local(request):
        token: str = request.app[state.ADMIN_TOKEN]
        header = request.headers.get("Authorization", "")
        given = header[7:] if header.startswith("Bearer ") else ""
        # An empty configured token disables the admin API rather than opening it.
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            return json_error(401, "unauthorized", "a valid bearer token is required")
    return await handler(request)


def make_app(*, admin_token: str, queue_ops: admin_queue.QueueOps | None = None,
             ingress: inject.IngressLike | None = None, metrics: Metrics | None = None,
             api_keys: Mapping[str, str] | None = None, policy_admin: Any = None,
             limits: Limits | None = None, shaper: Any = None,
             suppressions: Any = None, inbound: Any = None, intake: Any = None,
             events: Any = None, webhooks: Any = None,
             reputation: Any = None, request_limits: RequestLimits | None = None,
             users: Any = None, gdpr: Any = None,
             console: Any = None, relay_to: str | None = None,
             relay_name: str = "") -> web.Application:
    """`api_keys`: API key -> tenant, for POST /api/v1/messages. `limits`: [smtp]
    max_message_size / max_recipients and [server] hostname, applied to injection.
    What is None answers 503 (`queue_unavailable`, `injection_unavailable`,
    `policy_unavailable`, `metrics_unavailable`, `shaping_unavailable`). `shaper`: the
    dispatcher's mta.shaping.Shaper, for /api/v1/admin/shaping. `inbound`: the feedback
    loop's mta.bounce.Inbound, for one-click unsubscribe at /u/TOKEN (404 without it).
    `webhooks`: mta.webhooks.Webhooks, for /api/v1/webhooks. `reputation`:
    mta.reputation.ReputationGuard, for /api/v1/admin/tenants/{t}/reputation.
    `intake`: the daemon's mta.smtp.intake.Intake (`mta drain`, /readyz); `events` its
    EventLog, for the "intake" event.
    `request_limits`: rates per API key and admin token, admin body size ([http]; None: no
    rate limits, 1 MiB bodies). Run-time API keys live in `policy_admin`'s store; `users`:
    the run-time SMTP AUTH users (mta.smtp.auth.RuntimeUsers) for /api/v1/admin/users.
    `console`: mta.console.Console, the operator console's pages under /console/.
    With `[server] workers` > 1 (mta.http.relay): `relay_to`, on workers > 0, is worker
    0's relay socket, which gets every request but injection, unsubscribe and /readyz;
    `relay_name`, on worker 0, is the name its relay socket was bound under: requests over
    it are network requests, from the client address they carry."""
    request_limits = request_limits or RequestLimits()
    first = ([relay.relay_middleware] if relay_to else
             [relay.relayed_middleware] if relay_name else [])
    app = web.Application(middlewares=[*first, error_middleware,
                                       ratelimit.auth_failure_middleware,
                                       admin_auth_middleware,
                                       ratelimit.ratelimit_middleware,
                                       ratelimit.body_limit_middleware,
                                       admin_intake.intake_middleware],
                          client_max_size=request_limits.max_body)
    if relay_to:
        app.cleanup_ctx.append(relay.relay_session(relay_to))
    if relay_name:
        app[relay.RELAY_NAME] = relay_name
    app[state.ADMIN_TOKEN] = admin_token
    app[state.QUEUE_OPS] = queue_ops
    app[state.INGRESS] = ingress
    app[state.METRICS] = metrics
    app[state.API_KEYS] = inject.ApiKeys(
        api_keys, kv_for(policy_admin.store) if policy_admin is not None else None)
    app[ratelimit.LIMITER] = ratelimit.RateLimiter(request_limits)
    app[ratelimit.AUTH_FAILURES] = ratelimit.RateLimiter()
    app[admin_keys.USERS] = users
    app[state.POLICY_ADMIN] = policy_admin
    app[state.INJECT_LIMITS] = limits or Limits()
    app[state.SHAPER] = shaper
    app[admin_suppressions.SUPPRESSIONS] = suppressions
    app[unsubscribe.INBOUND] = inbound
    app[admin_webhooks.WEBHOOKS] = webhooks
    app[admin_reputation.REPUTATION] = reputation
    app[admin_intake.INTAKE] = intake
    app[admin_intake.EVENTS] = events
    app[admin_gdpr.GDPR] = gdpr  # mta.gdpr.Gdpr, for /api/v1/admin/gdpr
    app.add_routes(admin_queue.routes)
    app.add_routes(admin_policy.routes)
    app.add_routes(admin_licence.routes)
    app.add_routes(admin_shaping.routes)
    app.add_routes(admin_content.routes)
    app.add_routes(admin_suppressions.routes)
    app.add_routes(admin_domains.routes)
    app.add_routes(admin_webhooks.routes)
    app.add_routes(admin_reputation.routes)
    app.add_routes(admin_intake.routes)
    app.add_routes(admin_keys.routes)
    app.add_routes(admin_gdpr.routes)
    app.add_routes(admin_console.routes)
    app.add_routes(inject.routes)
    app.add_routes(scrape.routes)
    app.add_routes(openapi.routes)
    app.add_routes(unsubscribe.routes)
    admin_console.setup(app, console, policy_admin)  # run-time console accounts
    if console is not None:
        app.add_subapp("/console", console.app())
    return app
