"""The test DNS server itself (tests/support/dnsserver.py): what other areas' tests rely on."""

from __future__ import annotations

import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from mta.config import parse_config
from mta.dns.live import LiveLookup
from tests.support.dnsserver import DnsServer, DnsServerError, render_zone, txt


def ask(srv: DnsServer, name: str, rdtype: str, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    return send(query, srv.address, port=srv.port, timeout=2)


def test_serves_zone_text_over_udp_and_tcp_with_the_zone_ttls(dns_server_factory) -> None:
    srv = dns_server_factory({"example.test": "@ 42 IN MX 10 mx\nmx A 127.0.0.2\n"})
    for tcp in (False, True):
        response = ask(srv, "example.test", "MX", tcp)
        assert response.rcode() == dns.rcode.NOERROR
        assert [(rr.ttl, rd.to_text()) for rr in response.answer for rd in rr] == [
            (42, "10 mx.example.test.")]


def test_negative_answers_carry_an_soa_even_if_the_zone_text_has_none(
        dns_server_factory) -> None:
    srv = dns_server_factory({"example.test": "mx A 127.0.0.2\n"})
    response = ask(srv, "nosuch.example.test", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert [rr.rdtype for rr in response.authority] == [dns.rdatatype.SOA]


def test_names_outside_the_zones_are_refused_never_forwarded(dns_server_factory) -> None:
    srv = dns_server_factory({"example.test": "mx A 127.0.0.2\n"})
    for name in ("example.com", "other.test", "com", "a.root-servers.net"):
        assert ask(srv, name, "A").rcode() == dns.rcode.REFUSED, name


def test_txt_helper_splits_into_255_octet_strings() -> None:
    value = "p=" + "x" * 600
    rendered = render_zone("example.test", f"k TXT {txt(value)}\n")
    strings = [s.strip('"') for s in rendered.split("TXT ", 1)[1].strip().split(" ")]
    assert [len(s) for s in strings] == [255, 255, 92] and "".join(strings) == value


def test_bad_zone_text_is_reported_with_its_zone() -> None:
    with pytest.raises(DnsServerError, match=r"zone example\.test\."):
        render_zone("example.test", "mx NOTATYPE 127.0.0.2\n")


def test_start_is_fast_and_stop_frees_the_port(tmp_path: Path) -> None:
    srv = DnsServer({"example.test": "mx A 127.0.0.2\n"}, tmp_path)
    started = time.monotonic()
    srv.start()
    try:
        # Generous bound (loaded CI machine); typically ~0.1s. Not a performance test:
        # it catches a readiness wait that degenerated into a fixed sleep.
        assert time.monotonic() - started < 5
        assert ask(srv, "mx.example.test", "A").answer
    finally:
        srv.stop()
    assert srv.proc is None
    with pytest.raises(dns.exception.Timeout):
        ask(srv, "mx.example.test", "A")


def test_nameserver_is_the_form_dns_nameservers_takes(dns_server_factory) -> None:
    srv = dns_server_factory({"example.test": "mx A 127.0.0.2\n"})
    cfg = parse_config(f'[dns]\nnameservers = ["{srv.nameserver}", "127.0.0.1"]\n',
                       "test.toml", Path("."))
    lookup = LiveLookup(cfg.dns.nameservers)
    assert lookup.nameservers == [srv.nameserver, "127.0.0.1:53"]  # port 53 by default
