"""/api/v1/admin/licence: the licence the running daemon enforces, and this month's usage.

What `mta licence show` asks the daemon for: the file alone says who may send how much;
only the daemon's policy store knows how much was sent. Served from the policy engine's
licence gate (`PolicyAdmin.engine.licence`); 503 `policy_unavailable` without one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from mta.http import state
from mta.http.apidoc import errors as _errors
from mta.http.apidoc import ok as _ok
from mta.http.apidoc import op as _op
from mta.http.errors import ApiError

__all__ = ["OPENAPI_PATHS", "routes"]

routes = web.RouteTableDef()


@routes.get("/api/v1/admin/licence")
async def licence_status(request: web.Request) -> web.Response:
    admin = request.app[state.POLICY_ADMIN]
    if admin is None:
        raise ApiError(503, "policy_unavailable", "no policy engine runs in this process")
    engine = admin.engine
    # Read the month's counter now: the gate's copy is only as fresh as the last MAIL FROM.
    await engine.refresh_licence_usage()
    gate = engine.licence
    st = gate.status(engine.clock.now())
    lic = gate.licence
    body: dict[str, Any] = {
        "state": st.state, "problem": st.problem, "licensee": st.licensee,
        "month": gate.month, "used": st.used, "volume": st.volume,
        "remaining": max(st.volume - st.used, 0) if st.volume else None,
        "ratio": st.ratio, "max_connections": st.max_connections,
        "file": str(gate.path) if gate.path else None,
        "id": lic.id if lic else None,
        "valid_from": lic.valid_from.isoformat() if lic else None,
        "valid_until": lic.valid_until.isoformat() if lic else None,
        "timezone": str(engine.tz),
    }
    return web.json_response(body)


# The OpenAPI description of these routes (openapi.py puts the document together).
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/admin/licence": {"get": _op(
        "The licence in force and this month's usage", _ok("Licence status", {
            "type": "object", "properties": {
                "state": {"type": "string", "enum": [
                    "none", "valid", "expired", "not yet valid", "invalid"]},
                "problem": {"type": "string"}, "licensee": {"type": "string"},
                "id": {"type": ["string", "null"]}, "month": {"type": "string"},
                "used": {"type": "integer"},
                "volume": {"type": "integer", "description": "0 = unlimited"},
                "remaining": {"type": ["integer", "null"]}, "ratio": {"type": "number"},
                "max_connections": {"type": "integer"},
                "valid_from": {"type": ["string", "null"]},
                "valid_until": {"type": ["string", "null"]},
                "file": {"type": ["string", "null"]}, "timezone": {"type": "string"}}})
        | _errors((503, "policy_unavailable: no policy engine in this process")),
        tag="policy")},
}
