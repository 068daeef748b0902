"""GET /metrics: the Prometheus text exposition of mta.observe.metrics (no auth).

Scrape-time gauges are computed here (`Metrics.render` awaits their callbacks), so a scrape
costs a few in-memory reads and, at most every few seconds, the spool's count queries.
"""

from __future__ import annotations

from aiohttp import web

from mta.http import state
from mta.http.errors import ApiError
from mta.observe.metrics import CONTENT_TYPE

__all__ = ["routes"]

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    m = request.app[state.METRICS]
    if m is None:
        raise ApiError(503, "metrics_unavailable", "metrics are not enabled in this process")
    return web.Response(body=await m.render(), headers={"Content-Type": CONTENT_TYPE})
