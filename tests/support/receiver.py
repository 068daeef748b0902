"""A webhook receiver as a platform runs one: a real aiohttp server on loopback that
verifies every request with the Standard Webhooks library before it counts it.

    rx = await WebhookReceiver.start()         # http://127.0.0.1:PORT/hook
    rx.secret = "whsec_..."                     # from `mta webhooks add`
    rx.status = 503                             # answer this (and record nothing)
    await rx.wait_events(lambda e: ..., n)      # the verified events
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook

from tests.support.daemon import free_port


@dataclass
class Delivery:
    webhook_id: str
    events: list[dict[str, Any]]
    received_at: float
    type: str


@dataclass
class WebhookReceiver:
    host: str
    port: int
    runner: web.AppRunner
    secret: str | None = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    accepted: list[Delivery] = field(default_factory=list)
    refused_ids: list[str] = field(default_factory=list)  # answered non-2xx
    bad_signatures: int = 0

    @classmethod
    async def start(cls, host: str = "127.0.0.1", port: int | None = None) -> WebhookReceiver:
        app = web.Application()
        runner = web.AppRunner(app, access_log=None)
        rx = cls(host, port or free_port(host), runner)
        app.router.add_post("/hook", rx._handle)
        await runner.setup()
        await web.TCPSite(runner, host, rx.port).start()
        return rx

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def stop(self) -> None:
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        wid = request.headers.get("webhook-id", "")
        if self.status >= 300:
            self.refused_ids.append(wid)
            return web.Response(status=self.status, headers=self.headers)
        try:
            Webhook(self.secret or "").verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=401)
        doc = json.loads(body)
        self.accepted.append(Delivery(wid, doc["data"]["events"], time.time(), doc["type"]))
        return web.Response(status=204)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [e for d in self.accepted for e in d.events]

    async def wait_events(self, predicate, n: int = 1, timeout: float = 20.0
                          ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events if predicate(e)]
            if len(found) >= n or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.05)
