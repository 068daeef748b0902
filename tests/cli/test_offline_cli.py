"""Commands that need neither a daemon nor a whole config work where the config has an
unrelated problem: here the example config.toml in a fresh checkout, before `make run`
has made its TLS pair (var/tls/*.pem), run through the real `mta` console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mta.policy.licence import parse_licence
from tests.support.dnsserver import dns_server_factory  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parents[2]
MTA = Path(sys.executable).parent / "mta"  # the console script of this venv


def mta(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    return subprocess.run([str(MTA), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env, input=stdin)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A directory holding config.toml as shipped, without its TLS pair."""
    (tmp_path / "config.toml").write_text((REPO / "config.toml").read_text())
    assert not (tmp_path / "var").exists()
    return tmp_path


def test_the_config_really_is_broken(checkout):
    proc = mta("check-config", cwd=checkout)
    assert proc.returncode == 78
    assert "smtp.tls_cert: file not found" in proc.stderr


def test_bounce_classify(checkout):
    proc = mta("bounce", "classify", "550 5.1.1 no such user", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    category, action, _rule = proc.stdout.split()
    assert (category, action) == ("invalid_recipient", "bounce")
    assert proc.stderr == ""


def test_bounce_classify_still_uses_the_configs_own_rules(checkout):
    (checkout / "rules.toml").write_text(
        '[[rule]]\nname = "local-quirk"\ncategory = "policy"\ntext = "quirky"\n')
    cfg = checkout / "config.toml"
    cfg.write_text(cfg.read_text() + '\n[bounce]\nrules = "rules.toml"\n')
    proc = mta("bounce", "classify", "550 5.1.1 quirky mailbox", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0::2] == ["policy", "local-quirk"]
    # An error in the key it does read is still reported, naming file and key.
    cfg.write_text(cfg.read_text().replace('rules = "rules.toml"', "rules = 3"))
    proc = mta("bounce", "classify", "550 5.1.1 quirky mailbox", cwd=checkout)
    assert proc.returncode == 78
    assert proc.stderr == "config.toml: bounce.rules: expected a string, got an integer\n"


def test_passwd(checkout):
    proc = mta("passwd", cwd=checkout, stdin="s3cret\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("$scrypt$")


def test_dkim_keygen(checkout):
    proc = mta("dkim", "keygen", "--domain", "example.com", "--selector", "s1",
               "--algorithm", "ed25519", "--out", "keys", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    assert (checkout / "keys/example.com.s1.key").stat().st_mode & 0o777 == 0o600
    assert "k=ed25519; p=" in proc.stdout


def test_licence_keygen_issue_show(checkout):
    proc = mta("licence", "keygen", "-o", "licence.key", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    public = re.search(r'^licence_public_key = "(.+)"$', proc.stdout, re.M).group(1)
    proc = mta("licence", "issue", "--private-key", "licence.key", "--licensee", "Acme",
               "--from", "2026-01-01", "--until", "2099-12-31", "--monthly-volume", "100",
               "--max-connections", "5", "-o", "acme.licence", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    assert parse_licence((checkout / "acme.licence").read_text(), public).licensee == "Acme"
    proc = mta("licence", "show", "acme.licence", "--public-key", public, "--json",
               cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["signature"] == "ok" and doc["licensee"] == "Acme"
    # Usage needs the daemon, which this config cannot start: the output says why.
    assert doc["usage"] is None
    assert doc["usage_problem"].startswith("cannot ask the daemon: config.toml: smtp.tls_cert")


def test_dkim_check_reads_only_server_dkim_and_dns(checkout, dns_server_factory):  # noqa: F811
    proc = mta("dkim", "keygen", "--domain", "example.com", "--selector", "s1", "--out",
               "keys", cwd=checkout)
    assert proc.returncode == 0, proc.stderr
    record = proc.stdout.split("\n", 2)[2].strip()
    srv = dns_server_factory({"example.com": record + "\n"})
    cfg = checkout / "config.toml"
    text = cfg.read_text().replace("nameservers = []", f'nameservers = ["{srv.nameserver}"]')
    cfg.write_text(text + '\n[dkim."example.com"]\nselector = "s1"\n'
                          'key = "keys/example.com.s1.key"\n')
    proc = mta("dkim", "check", "--domain", "example.com", cwd=checkout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.fullmatch(r"ok +s1\._domainkey\.example\.com \(rsa-sha256, current\): "
                        r"published key matches\n", proc.stdout)
