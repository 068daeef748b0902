"""Who is calling a route that both the operator and tenants may use (suppressions,
webhooks): None for the operator (the admin token, or the local admin socket, which file
permissions guard), else the tenant whose API key it is."""

from __future__ import annotations

import hmac

from aiohttp import web

from mta.http import state
from mta.http.errors import ApiError
from mta.http.relay import came_relayed, unix_socket

__all__ = ["caller", "is_local"]


def is_local(request: web.Request) -> bool:
    """Whether the request came over the local admin socket (or a worker's own admin
    socket, mta.http.shards), which file permissions guard (mode 0660, the service
    user): trusted without a token. Worker 0's relay socket carries network requests
    that another worker accepted (mta.http.relay): those are not local."""
    return unix_socket(request) is not None and not came_relayed(request)


async def caller(request: web.Request) -> str | None:
    """None for the operator, else the tenant of the key; 401 for anyone else."""
    if is_local(request):
        return None
    header = request.headers.get("Authorization", "")
    given = header[7:].strip() if header[:7].lower() == "bearer " else ""
    token: str = request.app[state.ADMIN_TOKEN]
    if token and given and hmac.compare_digest(given.encode(), token.encode()):
        return None
    tenant = await request.app[state.API_KEYS].tenant(given)
    if tenant is None:
        raise ApiError(401, "unauthorized", "the admin token or a tenant's API key is "
                       "required (Authorization: Bearer ...)",
                       headers={"WWW-Authenticate": 'Bearer realm="mta"'})
    return tenant
