"""The console as an aiohttp sub-application mounted at /console by mta.http.app, with the
middleware that signs requests in: a valid session for every page but the sign-in page
and the static files, and for every POST the session's CSRF token."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from mta.config.console import ConsoleConfig
from mta.console import csrf
from mta.console.accounts import Account, Accounts
from mta.console.feed import EventFeed
from mta.console.sessions import COOKIE, Session, SessionStore
from mta.console.snapshots import Snapshots
from mta.http.ratelimit import Limit, RateLimiter, RequestLimits

__all__ = ["ACCOUNT", "CONSOLE", "FORM", "SESSION", "Console", "refuse"]

HERE = Path(__file__).parent
CONSOLE: web.AppKey[Console] = web.AppKey("console", object)  # type: ignore[arg-type]
SESSION = web.RequestKey("console_session", Session)
ACCOUNT = web.RequestKey("console_account", Account)
# The fields of a POST, read (and CSRF-checked) once by the middleware.
FORM = web.RequestKey("console_form", dict)
OPEN_PATHS = ("/console/sign-in", "/console/static/")
# Pages may load only their own scripts, styles and images; no framing (clickjacking).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Console:
    def __init__(self, cfg: ConsoleConfig, *, events: Any = None,
                 spool_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.spool_dir = spool_dir  # for the Overview's disk alert
        self.accounts = Accounts(cfg.accounts, events=events)
        self.sessions = SessionStore(cfg.session_idle, cfg.session_max)
        self.accounts.on_ended.append(self.sessions.end_account)
        self.feed = EventFeed()
        # The queue's costly counts (stats, qshape), shared by pages (mta.console.snapshots).
        self.snapshots = Snapshots()
        if events is not None:
            self.feed.listen(events)
        # Sign-in attempts per client address and per account name: the HTTP API's token
        # buckets (mta.http.ratelimit), with the console's own rate.
        self.limiter = RateLimiter(RequestLimits())
        self.closing = asyncio.Event()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=jinja2.select_autoescape(["html"]), trim_blocks=True,
            lstrip_blocks=True)
        from mta.console import filters
        self.templates.filters.update(filters.FILTERS)

    @property
    def sign_in_limit(self) -> Limit:
        return Limit(self.cfg.sign_in_rate, self.cfg.sign_in_burst)

    def attach(self, kv: Any, tenant_exists: Any = None) -> None:
        """Run-time accounts in the policy store (mta.console.accounts), shared by every
        worker and node on it; `tenant_exists(name)` checks a portal account's tenant."""
        self.accounts.attach(kv, tenant_exists)

    def reload(self, cfg: ConsoleConfig) -> None:
        """SIGHUP: new accounts, roles and passwords apply to the next request (where
        an account is gone or its password changed, its sessions are refused there)."""
        self.cfg = cfg
        self.accounts.reload(cfg.accounts)
        self.sessions.idle, self.sessions.max_age = cfg.session_idle, cfg.session_max

    def app(self) -> web.Application:
        from mta.console import account_views, views
        sub = web.Application(middlewares=[session_middleware])
        sub[CONSOLE] = self
        sub.add_routes(views.routes)
        sub.add_routes(account_views.routes)
        sub.router.add_static("/static", HERE / "static", name="static", append_version=True)
        sub.on_startup.append(self._on_startup)
        sub.on_shutdown.append(self._on_shutdown)
        return sub

    async def _on_startup(self, _app: web.Application) -> None:
        self._warm_task = asyncio.get_running_loop().create_task(
            self.snapshots.keep_warm(), name="console-counts")

    async def _on_shutdown(self, _app: web.Application) -> None:
        self.closing.set()  # live tails end, so shutdown need not wait for browsers
        task = getattr(self, "_warm_task", None)
        if task is not None:
            task.cancel()
        await self.snapshots.aclose()

    def render(self, request: web.Request, template: str, status: int = 200,
               **ctx: Any) -> web.Response:
        session = request.get(SESSION)
        body = self.templates.get_template(template).render(
            request=request, account=request.get(ACCOUNT), session=session,
            csrf_field=csrf.FIELD, csrf_token=session.csrf if session else "", **ctx)
        return web.Response(text=body, status=status, content_type="text/html",
                            headers=SECURITY_HEADERS)

    def set_cookie(self, response: web.StreamResponse, value: str) -> None:
        response.set_cookie(COOKIE, value, path="/console", httponly=True,
                            secure=self.cfg.secure_cookie, samesite="Strict")


def refuse(request: web.Request, status: int, message: str) -> web.Response:
    return request.app[CONSOLE].render(request, "error.html", status=status,
                                       status_code=status, message=message)


@web.middleware
async def session_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    console = request.app[CONSOLE]
    if request.path == "/console":  # the sub-application's prefix itself
        raise web.HTTPMovedPermanently("/console/")
    if request.path.startswith(OPEN_PATHS):
        return await handler(request)
    session = console.sessions.get(request.cookies.get(COOKIE))
    account = await console.accounts.get(session.account) if session is not None else None
    if account is not None and account.stamp != session.stamp:  # type: ignore[union-attr]
        account = None  # a new password, or removed and made again: sign in again
    if session is None or account is None:
        if request.method == "GET":
            raise web.HTTPSeeOther("/console/sign-in")
        return web.Response(status=401, text="sign in first\n", headers=SECURITY_HEADERS)
    request[SESSION] = session
    request[ACCOUNT] = account
    if request.method == "POST":
        form = dict(await request.post())
        if not csrf.check(request, session, form):  # type: ignore[arg-type]
            return refuse(request, 403, "This form is stale or did not come from the "
                          "console (CSRF check failed). Reload the page and try again.")
        request[FORM] = form
    return await handler(request)

