"""`mta dkim keygen | check`: what keygen prints parses (config line, zone-file record), and
`check` finds that record through a real DNS server on loopback ([dns] nameservers)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import dns.zone

from tests.support.dnsserver import dns_server_factory  # noqa: F401 - fixture


def mta_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mta.cli", *args], capture_output=True,
                          text=True, timeout=60, cwd=cwd)


def keygen(tmp_path: Path, selector: str, algorithm: str) -> tuple[Path, str, str]:
    """(key path, printed config line, printed zone-file record)."""
    proc = mta_cli("dkim", "keygen", "--domain", "Example.COM", "--selector", selector,
                   "--algorithm", algorithm, "--out", "keys", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    key_line, config_line, record = proc.stdout.split("\n", 2)
    path = tmp_path / "keys" / f"example.com.{selector}.key"
    assert key_line == f"; private key: keys/example.com.{selector}.key"
    assert path.stat().st_mode & 0o777 == 0o600
    return path, config_line, record.strip()


def test_keygen_output_parses_as_a_zone_record_and_a_config_line(tmp_path):
    _, config_line, record = keygen(tmp_path, "s1", "rsa")
    assert config_line == ('; config: [dkim."example.com"] selector = "s1", '
                           'key = "keys/example.com.s1.key"')
    zone = dns.zone.from_text("$TTL 300\n" + record + "\n", origin="example.com.",
                              check_origin=False)
    (rdata,) = zone.find_rdataset("s1._domainkey", "TXT")
    value = b"".join(rdata.strings).decode()
    assert re.fullmatch(r"v=DKIM1; k=rsa; p=[A-Za-z0-9+/]+=*", value)

    _, config_line, record = keygen(tmp_path, "e1", "ed25519")
    assert 'ed25519_selector = "e1"' in config_line
    assert "k=ed25519; p=" in record

    proc = mta_cli("dkim", "keygen", "--domain", "example.com", "--selector", "s1",
                   "--out", "keys", cwd=tmp_path)
    assert proc.returncode == 1 and "exists; not overwriting it" in proc.stderr
    proc = mta_cli("dkim", "keygen", "--domain", "example.com", "--selector", "s2",
                   "--algorithm", "dsa", cwd=tmp_path)
    assert proc.returncode == 64 and "invalid choice: 'dsa'" in proc.stderr


def test_check_through_the_configured_nameservers(tmp_path, dns_server_factory):  # noqa: F811
    key, _, record = keygen(tmp_path, "s1", "rsa")
    srv = dns_server_factory({"example.com": record + "\n"})
    cfg = tmp_path / "mta.toml"
    cfg.write_text(f'[dns]\nnameservers = ["{srv.nameserver}"]\ntimeout = "2s"\n\n'
                   f'[dkim."example.com"]\nselector = "s1"\nkey = "{key}"\n')
    proc = mta_cli("-c", str(cfg), "dkim", "check", "--domain", "example.com", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"ok +s1\._domainkey\.example\.com \(rsa-sha256, current\): "
                        r"published key matches\n", proc.stdout)

    srv.set_zones({"example.com": "www A 127.0.0.1\n"})
    proc = mta_cli("-c", str(cfg), "dkim", "check", "--domain", "example.com", cwd=tmp_path)
    assert proc.returncode == 1
    assert "FAIL  s1._domainkey.example.com (rsa-sha256, current): no TXT record" in proc.stdout

    proc = mta_cli("-c", str(cfg), "dkim", "check", "--domain", "other.test", cwd=tmp_path)
    assert proc.returncode == 1 and 'no [dkim."other.test"] section' in proc.stdout
    cfg.write_text('[dns]\nnameservers = "not a list"\n')
    proc = mta_cli("-c", str(cfg), "dkim", "check", "--domain", "example.com", cwd=tmp_path)
    assert proc.returncode == 78 and proc.stderr.startswith(f"{cfg}: dns.nameservers")
