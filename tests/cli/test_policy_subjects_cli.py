"""`mta policy suspend|resume|show` subjects: a TENANT, --sender-domain D, or --source
NAME_OR_IP (an egress source, by name or by its configured address)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mta.cli.policy import _source_name
from mta.config import parse_config

SOURCES = """
[[egress.source]]
name = "a"
address = "192.0.2.10"
[[egress.source]]
name = "b"
address = "2001:db8::b"
"""


def _mta(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mta.cli", *args], capture_output=True,
                          text=True, timeout=30)


@pytest.mark.parametrize(("args", "problem"), [
    (["suspend", "--reason", "x"], "give exactly one of TENANT or --sender-domain or --source"),
    (["suspend", "acme", "--sender-domain", "x.example", "--reason", "x"],
     "give exactly one of"),
    (["resume", "--source", "a", "--sender-domain", "x.example"], "give exactly one of"),
    (["show"], "give exactly one of TENANT or --sender-domain\n"),
    (["suspend", "--sender-domain", "x.example", "--class", "marketing", "--reason", "x"],
     "--class applies to a tenant"),
    (["suspend", "acme", "--until", "2099-01-01", "--for", "1h", "--reason", "x"],
     "give --until or --for, not both"),
])
def test_one_subject_per_command_is_a_usage_error_otherwise(args, problem):
    proc = _mta("policy", *args)
    assert proc.returncode == 64
    assert proc.stderr.startswith(f"mta policy {args[0]}: ")
    assert problem in proc.stderr


def test_for_takes_a_duration():
    proc = _mta("policy", "suspend", "acme", "--for", "soon", "--reason", "x")
    assert proc.returncode == 64 and "--for" in proc.stderr


@pytest.mark.parametrize(("given", "name"), [
    ("a", "a"), ("192.0.2.10", "a"), ("2001:DB8:0::b", "b"), ("[2001:db8::b]", "b")])
def test_a_source_is_named_or_found_by_its_address(given, name):
    cfg = parse_config(SOURCES, "t.toml")
    assert _source_name(cfg, given) == name


def test_an_unknown_source_names_the_configured_ones():
    cfg = parse_config(SOURCES, "t.toml")
    with pytest.raises(ValueError, match=r"configured: a \(192.0.2.10\), b \(2001:db8::b\)"):
        _source_name(cfg, "192.0.2.99")
    # Without [[egress.source]] the one implicit source is "default".
    assert _source_name(parse_config("", "t.toml"), "default") == "default"


def test_show_lists_a_tenants_suspensions_before_its_credits(mta_factory):
    mta = mta_factory("[tenants.acme]\nprepaid = true\n")
    proc = mta.cli("policy", "suspend", "acme", "--class", "marketing", "--until",
                   "2099-01-31", "--reason", "complaints")
    assert proc.returncode == 0, proc.stderr
    show = mta.cli("policy", "show", "acme")
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert "suspended: class marketing through 2099-01-31 (complaints)" in lines
    assert lines[-1].startswith("tenant acme: balance 0")
    doc = json.loads(mta.cli("policy", "show", "acme", "--json").stdout)
    assert [s["msg_class"] for s in doc["suspensions"]] == ["marketing"]
