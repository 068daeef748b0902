"""The OpenAPI 3.1 document: valid, served, and in step with the routes (both ways)."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from openapi_spec_validator import validate

from mta.http.app import make_app
from mta.http.openapi import DOCUMENT
from tests.support.daemon import free_port


def test_the_document_is_valid_openapi_3_1():
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT)


def test_every_route_is_documented_and_every_documented_path_is_a_route():
    app = make_app(admin_token="t")
    routes = {(r.resource.canonical, r.method.lower()) for r in app.router.routes()
              if r.method != "HEAD"}  # aiohttp adds HEAD to every GET
    documented = {(path, method) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert routes - documented == set(), "routes missing from openapi.py"
    assert documented - routes == set(), "documented paths with no route"


async def test_served_without_auth():
    runner = web.AppRunner(make_app(admin_token="t"), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.get(f"http://127.0.0.1:{port}/api/v1/openapi.json") as r:
            assert r.status == 200
            assert await r.json() == DOCUMENT
    finally:
        await runner.cleanup()
