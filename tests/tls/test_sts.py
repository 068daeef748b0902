"""MTA-STS discovery against the real parts: the `_mta-sts` TXT records and the
mta-sts.<domain> addresses in Unbound, the policies served over HTTPS by aiohttp on
127.0.0.10 with a certificate from a test CA. The policy host is resolved through mta's
own resolver: the test DNS is the only one asked, and only loopback is contacted."""

from __future__ import annotations

import asyncio
import json

import pytest
import pytest_asyncio

from mta.config import parse_config
from mta.dns import make_resolver
from mta.tls import CACHE_FILE, MtaSts, PolicyFetcher, StsPolicy
from tests.support.sts import PolicyServer, policy_text
from tests.support.tls import TestCA

HTTPS_HOST = "127.0.0.10"
DOMAINS = ["a.test", "redirect.test", "html.test", "huge.test", "missing.test",
           "broken.test", "badcert.test", "none.test"]


def zones(ids: dict[str, str] | None = None) -> dict[str, str]:
    ids = ids or {}
    out = {d: f"""
_mta-sts 0 IN TXT "v=STSv1; id={ids.get(d, '1')};"
mta-sts    IN A   {HTTPS_HOST}
""" for d in DOMAINS}
    out["nosts.test"] = "mta-sts IN A 127.0.0.10\n"  # a web server, but no TXT record
    out["badtxt.test"] = '_mta-sts IN TXT "v=STSv1; id=not-valid!"\nmta-sts IN A 127.0.0.10\n'
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def world(tmp_path, dns_server_factory):
    ca = TestCA(tmp_path / "ca")
    # The certificate names every policy host but badcert.test's.
    names = [f"mta-sts.{d}" for d in DOMAINS if d != "badcert.test"]
    srv = PolicyServer(ca.server_context(*names), HTTPS_HOST)
    srv.policies.update({
        "a.test": policy_text("enforce", "mx.a.test", "*.mx.a.test"),
        "badcert.test": policy_text("enforce", "mx.badcert.test"),
        "broken.test": "version: STSv1\nmode: enforce\nmax_age: 600\n",  # no mx
        "none.test": policy_text("none"),
    })
    srv.responses.update({
        "redirect.test": (301, "text/plain", b"", {"Location": "https://elsewhere.test/"}),
        "html.test": (200, "text/html", policy_text("enforce", "mx.html.test").encode(), {}),
        "huge.test": (200, "text/plain",
                      policy_text("enforce", "mx.huge.test").encode() + b"#" * 70_000, {}),
    })
    await srv.start()
    dns = dns_server_factory(zones())
    w = World(ca, srv, dns, tmp_path / "state")
    w.state.mkdir()
    try:
        yield w
    finally:
        for s in w.opened:
            await s.aclose()
        await srv.stop()


class World:
    def __init__(self, ca, srv, dns, state) -> None:
        self.ca, self.srv, self.dns, self.state = ca, srv, dns, state
        self.clock = Clock()
        self.events: list[dict] = []
        self.opened: list[MtaSts] = []

    def sts(self, *, retry: float = 300.0) -> MtaSts:
        """A new MtaSts (a new process, as far as it knows) on the same state dir."""
        cfg = parse_config(f'[dns]\nnameservers = ["{self.dns.nameserver}"]\ntimeout = "2s"\n')
        resolver = make_resolver(cfg.dns)
        fetcher = PolicyFetcher(resolver, ca_file=str(self.ca.ca_file), timeout=5,
                                port=self.srv.port)
        s = MtaSts(resolver, fetcher, self.state, retry=retry, clock=self.clock,
                   emit=lambda event, **f: self.events.append({"event": event, **f}))
        self.opened.append(s)
        return s


async def test_policy_fetched_over_verified_https_and_cached(world):
    sts = world.sts()
    await sts.start()
    policy = await sts.policy_for("a.test")
    assert policy == StsPolicy("enforce", 86400, ("mx.a.test", "*.mx.a.test"))
    assert await sts.policy_for("A.test.") == policy  # the cache, not a second fetch
    assert world.srv.requests == ["a.test"]
    assert world.events == [{"event": "mta_sts", "domain": "a.test", "outcome": "fetched",
                             "id": "1", "mode": "enforce", "mx": ["mx.a.test", "*.mx.a.test"],
                             "max_age": 86400}]
    await sts.cache.flush()
    saved = json.loads((world.state / CACHE_FILE).read_text())
    assert saved["policies"]["a.test"]["id"] == "1"


async def test_cache_survives_a_restart_and_outlives_a_stripped_record(world):
    sts = world.sts()
    await sts.start()
    assert (await sts.policy_for("a.test")).mode == "enforce"
    await sts.aclose()
    # A man in the middle strips the TXT record and the web server is gone: the cached
    # policy still holds (RFC 8461 3.1), without any fetch.
    world.dns.set_zones({d: z for d, z in zones().items() if d != "a.test"})
    await world.srv.stop()
    again = world.sts()
    await again.start()
    assert (await again.policy_for("a.test")).mode == "enforce"
    assert world.srv.requests == ["a.test"]
    # ... until its max_age has passed.
    world.clock.now += 86400 + 1
    assert await again.policy_for("a.test") is None


async def test_a_new_id_refreshes_in_the_background(world):
    sts = world.sts()
    await sts.start()
    assert (await sts.policy_for("a.test")).mx == ("mx.a.test", "*.mx.a.test")
    world.srv.policies["a.test"] = policy_text("testing", "mx2.a.test")
    world.dns.set_zones(zones({"a.test": "2"}))
    # The cached policy applies while the new one is fetched.
    assert (await sts.policy_for("a.test")).mode == "enforce"
    async with asyncio.timeout(10):
        while (await sts.policy_for("a.test")).mode != "testing":
            await asyncio.sleep(0.02)
    assert (await sts.policy_for("a.test")).mx == ("mx2.a.test",)
    assert world.srv.requests == ["a.test", "a.test"]
    assert sts.cache.get("a.test").id == "2"


@pytest.mark.parametrize(("domain", "why"), [
    ("redirect.test", "HTTP 301"),  # RFC 8461 3.3: redirects are not followed
    ("html.test", "not text/plain"),
    ("huge.test", "over the limit of 65536"),
    ("missing.test", "HTTP 404"),
    ("broken.test", "without any mx"),
    ("badcert.test", "certificate"),  # the certificate does not name mta-sts.badcert.test
])
async def test_no_usable_policy_means_no_policy(world, domain, why):
    sts = world.sts()
    await sts.start()
    assert await sts.policy_for(domain) is None
    [event] = world.events
    assert (event["domain"], event["outcome"]) == (domain, "failed")
    assert why in event["detail"], event["detail"]
    # The next message does not hammer the web server: the next try waits fetch_retry.
    assert await sts.policy_for(domain) is None
    assert len(world.events) == 1
    world.clock.now += 301
    assert await sts.policy_for(domain) is None
    assert len(world.events) == 2


@pytest.mark.parametrize("domain", ["nosts.test", "badtxt.test", "unknown.invalid"])
async def test_without_a_valid_record_nothing_is_fetched(world, domain):
    sts = world.sts()
    await sts.start()
    assert await sts.policy_for(domain) is None
    assert world.srv.requests == [] and world.events == []


async def test_mode_none_is_cached_and_applies_no_policy(world):
    sts = world.sts()
    await sts.start()
    assert await sts.policy_for("none.test") is None
    assert await sts.policy_for("none.test") is None
    assert world.srv.requests == ["none.test"]
    assert sts.cache.get("none.test").policy.mode == "none"


async def test_one_fetch_for_many_concurrent_deliveries(world):
    sts = world.sts()
    await sts.start()
    got = await asyncio.gather(*(sts.policy_for("a.test") for _ in range(20)))
    assert all(p is not None and p.mode == "enforce" for p in got)
    assert world.srv.requests == ["a.test"]
