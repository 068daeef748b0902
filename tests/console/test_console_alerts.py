"""The Overview's alerts from the real parts: an egress address listed on a DNS blocklist
(the test DNS server serves the zone) is an alert, and the Delivery paths page shows the
source as listed and avoided."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.console.conftest import console_toml
from tests.console.test_console_http import _cookie, sign_in

ZONES = {"bl.test": '@ IN TXT "test blocklist"\n'
                    '10.0.0.127 IN A 127.0.0.2\n10.0.0.127 IN TXT "listed for a test"\n'}
TOML = """
[[egress.source]]
name = "a"
address = "127.0.0.10"
[[egress.source]]
name = "b"
address = "127.0.0.11"
[egress.pool.default]
sources = { a = 1, b = 1 }

[dnsbl]
zones = ["bl.test"]
interval = "0.2s"
"""


async def test_a_listed_egress_address_is_an_alert(mta_factory, dns_server_factory):
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, console_toml() + TOML, dns=dns.nameserver)
    assert await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "dnsbl_listed",
                                   30)
    base = f"http://127.0.0.1:{mta.http_port}"
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, base, "vera")  # a viewer sees the alerts too
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
        async with http.get(base + "/console/", headers=cookie) as page:
            text = await page.text()
        assert "Egress source a is listed on a blocklist and avoided." in text
        assert "Egress source b" not in text
        async with http.get(base + "/console/paths", headers=cookie) as page:
            text = await page.text()
        assert "listed: avoided" in text


async def test_a_spool_disk_short_of_free_space_is_an_alert(mta_factory):
    # Nearly any real file system has less than 99.9999% free: the real statvfs of the
    # spool's disk, measured against a threshold that must trip.
    toml = console_toml().replace("[console]\n", "[console]\ndisk_alert_free = 0.999999\n")
    mta = await asyncio.to_thread(mta_factory, toml)
    base = f"http://127.0.0.1:{mta.http_port}"
    async with aiohttp.ClientSession() as http:
        r = await sign_in(http, base, "olga")
        cookie = {"Cookie": f"mta_console={_cookie(r, 'mta_console')}"}
        async with http.get(base + "/console/", headers=cookie) as page:
            text = await page.text()
    assert "Spool disk" in text and "% free" in text
