"""`validate(cfg)`: one `FILE: key: problem` line per error in [shaping] and [egress]."""

import pytest

from mta.config import ConfigError, parse_config
from mta.shaping.validate import validate


def test_a_good_config_has_no_errors() -> None:
    cfg = parse_config('''
[shaping.default]
max_message_rate = "1,000/h"
[shaping."gmail.com".source.ip1]
tls = "required"
[[egress.source]]
name = "ip1"
address = "::1"
warmup = [100, 200]
warmup_start = "2026-11-01"
[egress.pool.p]
sources = { ip1 = 1 }
''', "good.toml")
    assert validate(cfg) == []


def test_every_problem_names_file_and_key() -> None:
    cfg = parse_config('''
[shaping.default]
max_message_rate = "100/x"
connection_limit = 0
tls = "maybe"
[shaping."gmail.com".source.ip9]
max_connection_rate = "fast"
[[egress.source]]
name = "ip1"
address = "not-an-ip"
warmup = [100]
[[egress.source]]
name = "ip1"
warmup_start = "1 Nov"
[egress.pool.p]
sources = { ip1 = 1, nope = 2 }
''', "bad.toml")
    assert validate(cfg) == [
        "bad.toml: egress.source[0].address: not an IPv4 or IPv6 address: 'not-an-ip'",
        "bad.toml: egress.source[0].warmup_start: required with warmup (\"YYYY-MM-DD\")",
        "bad.toml: egress.source[1].name: duplicate source name 'ip1'",
        "bad.toml: egress.source[1].warmup_start: invalid date '1 Nov': expected "
        "\"YYYY-MM-DD\"",
        "bad.toml: egress.pool.p.sources.nope: unknown egress source 'nope'",
        "bad.toml: shaping.default.max_message_rate: invalid rate '100/x': unknown period "
        "'x' (use s, m, h or d)",
        "bad.toml: shaping.default.connection_limit: must be at least 1",
        "bad.toml: shaping.default.tls: must be \"opportunistic\", \"required\", "
        "\"verify\" or \"disabled\"",
        "bad.toml: shaping.\"gmail.com\".source.ip9: unknown egress source 'ip9'",
        "bad.toml: shaping.\"gmail.com\".source.ip9.max_connection_rate: invalid rate "
        "'fast': expected COUNT/PERIOD like \"100/s\", \"5000/h\" or \"100/s burst 20\"",
    ]


def test_loader_rejects_wrong_types_in_shaping_sections() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config('[shaping.default]\nconnection_limit = "ten"\nfoo = 1\n', "t.toml")
    assert e.value.errors == [
        "t.toml: shaping.default.connection_limit: expected an integer, got a string",
        "t.toml: shaping.default.foo: unknown key",
    ]
