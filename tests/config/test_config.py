"""Configuration: every broken config gets one exact `FILE: key: problem` line, exit 78."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
from pathlib import Path

import pytest

from mta.config import (
    Config,
    ConfigError,
    format_duration,
    load_config,
    parse_config,
    parse_duration,
    parse_hostport,
    parse_size,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("5m", 300), ("4h", 14400), ("5d", 432000), ("250ms", 0.25), ("1w", 604800),
    ("30", 30), (12, 12), (1.5, 1.5),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5 minutes", "m", "-5s", "", True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("text", "size"), [
    ("25MiB", 25 * 1024 * 1024), ("10MB", 10_000_000), ("512KiB", 524288), ("1000", 1000),
    (2048, 2048), ("1GiB", 1024**3), ("1.5KiB", 1536),
])
def test_sizes(text, size):
    assert parse_size(text) == size


def test_format_duration_round_trips():
    for s in ("5m", "4h", "5d", "90s"):
        assert parse_duration(format_duration(parse_duration(s))) == parse_duration(s)


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:2525", ("127.0.0.1", 2525)),
    ("[::1]:25", ("::1", 25)),
    ("localhost:8025", ("localhost", 8025)),
])
def test_hostport(text, expected):
    assert parse_hostport(text) == expected


def test_defaults_are_safe():
    cfg = parse_config("", "c.toml")
    assert cfg.smtp.listen == [("127.0.0.1", 2525)]
    assert cfg.http.listen == [("127.0.0.1", 8025)]
    # No open relay by default: only loopback relays without AUTH.
    assert cfg.smtp.relay_networks == [ipaddress.ip_network("127.0.0.0/8")]
    assert cfg.delivery.port == 25
    assert cfg.delivery.retry == [300, 600, 1800, 3600, 7200, 14400]
    assert cfg.delivery.max_age == 5 * 86400


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "c.toml").write_text('[spool]\ndir = "q"\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg.spool.dir == tmp_path / "q"
    assert cfg.log.events == str(tmp_path / "var/log/events.jsonl")


@pytest.fixture
def example_config(tmp_path):
    """config.toml as `make run` serves it: beside it the development TLS pair."""
    from tests.support.tls import write_self_signed

    (tmp_path / "var/tls").mkdir(parents=True)
    write_self_signed(tmp_path / "var/tls/cert.pem", tmp_path / "var/tls/key.pem")
    path = tmp_path / "config.toml"
    path.write_text((REPO / "config.toml").read_text())
    return path


def test_the_example_config_is_valid(example_config):
    cfg = load_config(example_config)
    assert isinstance(cfg, Config)
    assert cfg.smtp.listen == [("127.0.0.1", 2525)]
    assert cfg.http.listen == [("127.0.0.1", 8025)]


BROKEN = [
    ("[smtp]\nmax_message_size = \"10 parsecs\"\n",
     "smtp.max_message_size: invalid size '10 parsecs': expected a number and a unit "
     "(B, KB, MB, GB, KiB, MiB, GiB), like \"25MiB\""),
    ("[smtp]\nmax_recipients = \"many\"\n",
     "smtp.max_recipients: expected an integer, got a string"),
    ("[smtp]\nlisten = \"127.0.0.1:25\"\n",
     "smtp.listen: expected a list of \"host:port\", got a string"),
    ("[smtp]\nlisten = [\"127.0.0.1:99999\"]\n",
     "smtp.listen[0]: invalid port in '127.0.0.1:99999'"),
    ("[smtp]\nrelay_networks = [\"10.0.0.0/33\"]\n",
     "smtp.relay_networks[0]: invalid network '10.0.0.0/33': expected CIDR like \"10.0.0.0/8\""),
    ("[smtp]\nidle_timeout = \"soon\"\n",
     "smtp.idle_timeout: invalid duration 'soon': expected a number and a unit "
     "(ms, s, m, h, d, w), like \"5m\""),
    ("[smtp]\nmax_recipient = 10\n", "smtp.max_recipient: unknown key"),
    ("[smtpd]\nlisten = []\n", "smtpd: unknown key"),
    ("[smtp]\nmax_line_length = 100\n",
     "smtp.max_line_length: must be at least 512 (RFC 5321 4.5.3.1.4)"),
    ("[smtp]\ntls_cert = \"/nonexistent/cert.pem\"\n",
     ["smtp.tls_key: tls_cert and tls_key must be set together",
      "smtp.tls_cert: file not found: /nonexistent/cert.pem"]),
    ("[smtp]\nauth_require_tls = \"yes\"\n",
     "smtp.auth_require_tls: expected true or false, got a string"),
    ("[spool]\ncommit_wait = \"1s\"\n", "spool.commit_wait: must be between 0 and 100ms"),
    ("[delivery]\nretry = []\n", "delivery.retry: at least one retry interval is required"),
    ("[delivery]\nport = 0\n", "delivery.port: must be a port number (1-65535)"),
    ("[delivery]\ntls = \"maybe\"\n",
     "delivery.tls: must be \"opportunistic\", \"required\", \"verify\" or \"disabled\""),
    ("[delivery]\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
     "delivery.tls_ca_file: file not found: /nonexistent/ca.pem"),
    ("[dns]\nnameservers = [\"127.0.0.1:x\"]\n",
     "dns.nameservers[0]: invalid port in '127.0.0.1:x'"),
    ("[server]\nworkers = 0\n",
     "server.workers: expected \"auto\" or a number of processes from 1 to 64, got 0"),
    ("[server]\nworkers = \"many\"\n",
     "server.workers: expected \"auto\" or a number of processes from 1 to 64, got 'many'"),
    ("[users.bob]\ntenant = \"nobody\"\npassword = \"$scrypt$x\"\n",
     "users.bob.tenant: unknown tenant 'nobody'"),
    ("[users.bob]\npassword = \"hunter2\"\n",
     "users.bob.password: expected a scrypt hash from `mta passwd`"),
    ("[log]\nlevel = \"chatty\"\n", "log.level: must be one of debug, info, warning, error"),
    ("[unsubscribe]\nclasses = [\"markting\"]\n",
     "unsubscribe.classes[0]: unknown message class 'markting' (one of marketing, "
     "transactional: [policy] class_max_age)"),
    ("[reputation]\nsuspend_class = \"bulk\"\n",
     "reputation.suspend_class: unknown message class 'bulk' (one of marketing, "
     "transactional)"),
    ("[reputation]\nhard_bounce = [0.5, 0.1, 0, 0]\n",
     "reputation: hard_bounce: thresholds must rise from warned to suspended"),
    ("[webhooks]\nbatch_size = 0\n", "webhooks: batch_size: must be between 1 and 10000"),
    ("[smtp\n", None),  # syntax error: the message comes from tomllib
]


@pytest.mark.parametrize(("text", "message"), BROKEN)
def test_broken_config_names_file_and_key(text, message):
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "broken.toml")
    if message is None:
        assert exc.value.errors[0].startswith("broken.toml: (syntax): ")
    else:
        messages = message if isinstance(message, list) else [message]
        assert exc.value.errors == [f"broken.toml: {m}" for m in messages]


def test_every_error_is_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        parse_config("[smtp]\nmax_recipients = \"x\"\nbogus = 1\n[delivery]\nport = \"25\"\n",
                     "c.toml")
    assert exc.value.errors == [
        "c.toml: smtp.max_recipients: expected an integer, got a string",
        "c.toml: smtp.bogus: unknown key",
        "c.toml: delivery.port: expected an integer, got a string",
    ]


def _mta(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mta.cli", *args], capture_output=True,
                          text=True, timeout=60, **kw)


def test_check_config_exits_78_with_one_line_per_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp]\nmax_recipients = -1\nbogus = true\n")
    proc = _mta("check-config", "-c", str(bad))
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [f"{bad}: smtp.bogus: unknown key",
                                        f"{bad}: smtp.max_recipients: must be at least 1"]
    bad.write_text("[smtp]\nmax_recipients = 0\n")
    proc = _mta("check-config", "-c", str(bad))
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [f"{bad}: smtp.max_recipients: must be at least 1"]


def test_check_config_accepts_the_example(example_config):
    proc = _mta("check-config", "-c", str(example_config))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith(": ok")


def test_missing_config_file_is_a_config_error(tmp_path):
    proc = _mta("check-config", "-c", str(tmp_path / "nope.toml"))
    assert proc.returncode == 78
    assert proc.stderr.strip() == f"{tmp_path / 'nope.toml'}: (file): cannot read: " \
                                  "No such file or directory"


def test_serve_refuses_an_invalid_config(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[spool]\nmax_batch = 0\n")
    proc = _mta("serve", "-c", str(bad))
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [f"{bad}: spool.max_batch: must be at least 1"]


def test_workers_auto_is_one_per_core():
    """`workers = "auto"`: one per core this process may run on (the test machines have the
    redis-server package, so the embedded store can share their state)."""
    import os

    cores = min(len(os.sched_getaffinity(0)), 64)
    assert parse_config('[server]\nworkers = "auto"\n').server.workers == cores
    assert parse_config('[server]\nworkers = 3\n').server.workers == 3
    assert parse_config("").server.workers == 1
