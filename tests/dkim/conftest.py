"""Fixtures for tests/dkim: keys generated once per session, and a real DNS server
(tests/support/dnsserver.py, Unbound on loopback) publishing them for dkimpy's verifier."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mta.dkim.dnstxt import TxtLookup
from tests.dkim.helpers import Keys
from tests.support.dnsserver import DnsServer, txt


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return Keys(tmp_path_factory.mktemp("dkim-keys"))


@pytest.fixture(scope="session")
def published(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """example.com publishes s1 = rsa1, s2 = rsa2, e1 = ed1, e2 = ed2."""
    records = [f"{sel}._domainkey TXT {txt(keys.txt[name].decode())}"
               for sel, name in (("s1", "rsa1"), ("s2", "rsa2"), ("e1", "ed1"), ("e2", "ed2"))]
    srv = DnsServer({"example.com": "\n".join(records) + "\n"},
                    tmp_path_factory.mktemp("dkim-dns"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def dnsfunc(published: DnsServer) -> TxtLookup:
    """dkimpy's dnsfunc hook, resolving through the real server with dnspython."""
    return TxtLookup([published.nameserver], timeout=5)
