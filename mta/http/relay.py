"""HTTP on every worker (`[server] workers` > 1): what a worker answers itself, and what it
relays to worker 0.

Every worker accepts on `[http] listen` (SO_REUSEPORT: the kernel spreads connections, as
for SMTP). Injection (POST /api/v1/messages), one-click unsubscribe (/u/TOKEN) and /readyz
are answered where they land: a worker writes accepted mail to its own spool shard, and
policy, keys and suppressions are in the shared store. Everything else (admin API,
/metrics, the console, webhooks, the OpenAPI document) is the whole daemon's, and worker 0
answers it: the other workers relay those requests over worker 0's relay socket
(`SPOOL/http-relay.sock`), streaming both ways (the console's live feed is an SSE stream).

Trust: a relayed request is a network request. The relaying worker names the client in
`X-Mta-Client` (never passing on one a client sent); on worker 0, `relayed_middleware`
makes that the request's `remote`, and `mta.http.callers.is_local` is false on the relay
socket, so the admin token, rate limits and sign-in limits apply as over TCP.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from mta.http.errors import json_error

__all__ = ["RELAY_NAME", "RELAY_SOCKET", "answered_here", "came_relayed", "relay_middleware",
           "relay_session", "relay_socket", "relayed_middleware", "unix_socket"]

RELAY_SOCKET = "http-relay.sock"
CLIENT_HEADER = "X-Mta-Client"
_INJECT = "/api/v1/messages"
# RFC 9110 7.6.1: connection-specific fields are not forwarded; Host is kept (the console
# builds its links from it), Content-Length is re-derived by aiohttp from the stream.
_HOP_BY_HOP = frozenset(h.lower() for h in (
    "Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", CLIENT_HEADER))
# Worker 0: the name its relay socket was bound under (what accepted sockets report).
RELAY_NAME: web.AppKey[str] = web.AppKey("relay_name", str)
_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("relay_session",
                                                          aiohttp.ClientSession)


def relay_socket(spool_dir: Any) -> str:
    return str(spool_dir / RELAY_SOCKET)


def answered_here(request: web.Request) -> bool:
    """What any worker answers itself: the routes that touch only its shard and the store."""
    path = request.path
    return path == _INJECT or path.startswith("/u/") or path == "/readyz"


def came_relayed(request: web.Request) -> bool:
    """Whether the request came over worker 0's relay socket. The socket is known by the
    name it was bound under (`RELAY_NAME`: mta.http.unix binds under a temporary name and
    renames the file, and accepted sockets report the bound name)."""
    name = request.config_dict.get(RELAY_NAME)
    sock = unix_socket(request)
    if not name or sock is None:
        return False
    try:
        return bool(sock.getsockname() == name)
    except OSError:
        return False


@web.middleware
async def relayed_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Worker 0: a relayed request's client is the one the relaying worker named."""
    if came_relayed(request):
        request = request.clone(remote=request.headers.get(CLIENT_HEADER) or None)
    return await handler(request)


@web.middleware
async def relay_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    """Workers > 0: relay what `answered_here` does not answer to worker 0. Installed
    first, so that nothing of this worker (limits, auth) looks at a relayed request."""
    if answered_here(request) or unix_socket(request) is not None:
        # Over this worker's own admin socket: worker 0 asking about this shard.
        return await handler(request)
    return await _relay(request, request.app[_SESSION])


def relay_session(socket_path: str) -> Any:
    """The app's cleanup context on workers > 0: one client session to worker 0's relay
    socket for the app's lifetime."""
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=socket_path), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as session:
            app[_SESSION] = session
            yield
    return ctx


def unix_socket(request: web.Request) -> Any:
    """The request's socket when it came over an AF_UNIX listener, else None."""
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock if sock is not None and sock.family == socket.AF_UNIX else None


async def _relay(request: web.Request, session: aiohttp.ClientSession) -> web.StreamResponse:
    headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP]
    headers.append((CLIENT_HEADER, request.remote or ""))
    url = URL("http://worker0" + request.raw_path, encoded=True)
    try:
        upstream = await session.request(
            request.method, url, headers=headers, allow_redirects=False,
            data=request.content if request.body_exists else None)
    except (aiohttp.ClientError, OSError):
        return json_error(503, "worker_unavailable",
                          "worker 0, which answers this for the whole daemon, is not "
                          "reachable (restarting?); retry shortly",
                          headers={"Retry-After": "1"})
    async with upstream:
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                response.headers.add(k, v)
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    return response
