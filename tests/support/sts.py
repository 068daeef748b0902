"""An MTA-STS policy web server for tests: aiohttp over HTTPS on a 127.0.0.x address.

    srv = PolicyServer(ca.server_context("mta-sts.a.test", "mta-sts.b.test"), "127.0.0.10")
    srv.policies["a.test"] = "version: STSv1\\nmode: enforce\\nmx: mx.a.test\\nmax_age: 86400\\n"
    await srv.start()          # srv.port: give it to [tls] https_port
    srv.requests               # the domains fetched, in order

Answers GET /.well-known/mta-sts.txt by the Host header's mta-sts.<domain>: the policy as
text/plain, or 404. `responses[domain]` overrides it with (status, content type, body,
extra headers), for the failures a sender must survive (redirects, HTML, huge bodies).
"""

from __future__ import annotations

import ssl

from aiohttp import web

__all__ = ["PolicyServer", "policy_text"]


def policy_text(mode: str, *mx: str, max_age: int = 86400) -> str:
    return "version: STSv1\r\n" + f"mode: {mode}\r\n" + "".join(
        f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n"


class PolicyServer:
    def __init__(self, tls_context: ssl.SSLContext, host: str = "127.0.0.10") -> None:
        self.tls_context = tls_context
        self.host = host
        self.port = 0
        self.policies: dict[str, str] = {}
        self.responses: dict[str, tuple[int, str, bytes, dict[str, str]]] = {}
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = (request.host or "").rsplit(":", 1)[0].lower()
        domain = host.removeprefix("mta-sts.")
        self.requests.append(domain)
        if domain in self.responses:
            status, ctype, body, headers = self.responses[domain]
            return web.Response(status=status, body=body, content_type=ctype,
                                headers=headers)
        text = self.policies.get(domain)
        if text is None:
            return web.Response(status=404, text="no policy")
        return web.Response(text=text, content_type="text/plain")

    async def start(self, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/.well-known/mta-sts.txt", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port, ssl_context=self.tls_context)
        await site.start()
        server = site._server  # aiohttp keeps the bound socket there
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
