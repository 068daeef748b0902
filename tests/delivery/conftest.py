"""Fixtures for delivery tests: scriptable MX servers on loopback (tests/support/mx.py).

Every delivery test runs on the stdlib loop and on uvloop, which `mta serve` uses: the
client's Protocol and STARTTLS paths differ between the two.
"""

import asyncio

import uvloop

from tests.support.mx import mx_factory, mx_tls_context

__all__ = ["mx_factory", "mx_tls_context"]


def pytest_asyncio_loop_factories(config, item):
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
