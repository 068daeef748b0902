"""Through real DNS: what `mta dkim keygen` prints is published in a zone served by a real
DNS server on loopback (tests/support/dnsserver.py); dkimpy's verifier fetches the keys
through it with our dnspython `dnsfunc`, and `mta dkim check` compares them."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from mta.config import Config, parse_config
from mta.dkim import DkimSigner, check_main, keygen_main, txt_lookup
from tests.dkim.helpers import MESSAGE
from tests.support.dnsserver import dns_server_factory  # noqa: F401 - fixture

NOW = float(int(time.time()) - 60)

Serve = Callable[[list[str]], str]


@pytest.fixture
def serve_example_com(dns_server_factory) -> Serve:  # noqa: F811
    """serve(records) -> "127.0.0.1:PORT" of a real DNS server for example.com."""
    def serve(records: list[str]) -> str:
        return dns_server_factory({"example.com": "\n".join(records) + "\n"}).nameserver
    return serve


def keygen(tmp_path: Path, selector: str, alg: str, capsys: pytest.CaptureFixture[str]
           ) -> tuple[Path, str]:
    """A new key, and the zone-file record keygen printed for it (verbatim)."""
    assert keygen_main("example.com", selector, alg, tmp_path / "keys") == 0
    printed = capsys.readouterr().out
    record = printed[printed.index(f"{selector}._domainkey."):]
    return tmp_path / "keys" / f"example.com.{selector}.key", record.strip()


def config(tmp_path: Path, body: str) -> Config:
    return parse_config('[dkim."example.com"]\n' + body, str(tmp_path / "config.toml"),
                        tmp_path)


def test_keygen_record_published_in_dns_verifies_dual_signature(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], serve_example_com: Serve) -> None:
    rsa_path, rsa_rec = keygen(tmp_path, "s1", "rsa", capsys)
    ed_path, ed_rec = keygen(tmp_path, "e1", "ed25519", capsys)
    ns = serve_example_com([rsa_rec, ed_rec])
    cfg = config(tmp_path, f'algorithms = ["rsa-sha256", "ed25519-sha256"]\n'
                 f'selector = "s1"\nkey = "{rsa_path}"\n'
                 f'ed25519_selector = "e1"\ned25519_key = "{ed_path}"\n')
    signed = DkimSigner.from_config(cfg.dkim).sign(MESSAGE, NOW)
    dnsfunc = txt_lookup([ns], timeout=5)
    assert dkim.DKIM(signed).verify(idx=0, dnsfunc=dnsfunc)
    assert dkim.DKIM(signed).verify(idx=1, dnsfunc=dnsfunc)
    tampered = signed.replace(b"Noon", b"Ten ")
    assert not dkim.verify(tampered, dnsfunc=dnsfunc)


def test_check_reports_match_mismatch_and_missing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], serve_example_com: Serve) -> None:
    key1, rec1 = keygen(tmp_path, "s1", "rsa", capsys)
    _, rec_other = keygen(tmp_path, "other", "rsa", capsys)
    cfg = config(tmp_path, f'selector = "s1"\nkey = "{key1}"\n')

    out = io.StringIO()
    ns = serve_example_com([rec1])
    assert check_main("example.com", cfg, [ns], now=NOW, out=out) == 0
    assert re.search(r"^ok +s1\._domainkey\.example\.com .*matches", out.getvalue(), re.M)

    out = io.StringIO()
    ns = serve_example_com([rec_other.replace("other._domainkey", "s1._domainkey")])
    assert check_main("example.com", cfg, [ns], now=NOW, out=out) == 1
    assert "different key" in out.getvalue()

    out = io.StringIO()
    ns = serve_example_com([])
    assert check_main("example.com", cfg, [ns], now=NOW, out=out) == 1
    assert "no TXT record published" in out.getvalue()


def test_check_rotation_needs_both_selectors_before_the_switch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], serve_example_com: Serve) -> None:
    key1, rec1 = keygen(tmp_path, "s1", "rsa", capsys)
    key2, rec2 = keygen(tmp_path, "s2", "rsa", capsys)
    switch = NOW + 86400
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(switch))
    cfg = config(tmp_path, f'selector = "s1"\nkey = "{key1}"\nnext_selector = "s2"\n'
                 f'next_key = "{key2}"\nswitch_at = "{when}"\n')
    only_current = serve_example_com([rec1])
    both = serve_example_com([rec1, rec2])
    only_next = serve_example_com([rec2])

    out = io.StringIO()
    assert check_main("example.com", cfg, [only_current], now=NOW, out=out) == 1
    assert re.search(r"^FAIL +s2\._domainkey.*next", out.getvalue(), re.M)
    assert check_main("example.com", cfg, [both], now=NOW, out=io.StringIO()) == 0
    # After the switch the old selector may go (reported, not required).
    out = io.StringIO()
    assert check_main("example.com", cfg, [only_next], now=switch + 1, out=out) == 0
    assert re.search(r"^info +s1\._domainkey.*retired", out.getvalue(), re.M)


def test_lookup_failures_are_dns_errors_not_missing_records(dns_server_factory) -> None:  # noqa: F811
    """SERVFAIL and timeouts say nothing about the record: `check` must not call them
    "not published", and dkimpy's dnsfunc gets None (its temperror path)."""
    from mta.dkim.dnstxt import DkimDnsError

    ns = dns_server_factory({"example.com": "x TXT \"y\"\n"}).nameserver
    lookup = txt_lookup([ns], timeout=0.5)  # the timeout zone drops queries: keep it short
    assert lookup.records("x.example.com") == [b"y"]
    assert lookup.records("nothing.example.com") == []  # NXDOMAIN: really not there
    for name in ("s1._domainkey.servfail.test", "s1._domainkey.timeout.test"):
        with pytest.raises(DkimDnsError):
            lookup.records(name)
        assert lookup(name.encode()) is None
