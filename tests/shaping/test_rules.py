"""Layered path rules: default -> default.source -> site keys -> site.source, then
[delivery], then built-in values; each value remembers its layer."""

from mta.config import parse_config
from mta.shaping.rate import parse_rate
from mta.shaping.rules import matching_keys, resolve_path

CONFIG = parse_config('''
[delivery]
connection_limit = 20
max_deliveries_per_connection = 100

[shaping.default]
connection_limit = 10
max_message_rate = "1000/h"
connect_timeout = "20s"

[shaping.default.source.ip2]
tls = "required"

[shaping."gmail.com"]
connection_limit = 5
max_message_rate = "100/s burst 20"
suspend_after = 3

[shaping."gmail.com".source.ip1]
connection_limit = 2

[shaping."yahoo.com"]
max_connection_rate = "10/m"

[[egress.source]]
name = "ip1"
[[egress.source]]
name = "ip2"
''', "test.toml")

GOOGLE = "(alt1|alt2|aspmx)?.l.google.com"
KEY_SITES = {"gmail.com": GOOGLE, "yahoo.com": "mta.am0.yahoodns.net"}


def resolve(source: str, site: str, domain: str = ""):
    return resolve_path(CONFIG.shaping, CONFIG.delivery, source=source, site=site,
                        domain=domain, key_sites=KEY_SITES)


def test_a_site_key_governs_every_domain_of_that_site() -> None:
    """googlemail.com and a Google-hosted company domain roll up to gmail.com's site."""
    for domain in ("gmail.com", "googlemail.com", "example-on-workspace.com"):
        assert matching_keys(CONFIG.shaping, domain=domain, site=GOOGLE,
                             key_sites=KEY_SITES) == ["gmail.com"]
    assert resolve("ip3", GOOGLE, "googlemail.com").connection_limit == 5


def test_most_specific_layer_wins_and_says_so() -> None:
    pc = resolve("ip1", GOOGLE)
    assert pc.connection_limit == 2
    assert pc.origins["connection_limit"] == "gmail.com.source.ip1"
    assert pc.max_message_rate == parse_rate("100/s burst 20")
    assert pc.origins["max_message_rate"] == "gmail.com"
    assert pc.connect_timeout == 20.0
    assert pc.origins["connect_timeout"] == "default"
    assert pc.suspend_after == 3


def test_unset_values_come_from_delivery_then_builtin() -> None:
    pc = resolve("ip1", "mx.example.net", "example.net")
    assert (pc.connection_limit, pc.origins["connection_limit"]) == (10, "default")
    assert pc.max_deliveries_per_connection == 100
    assert pc.origins["max_deliveries_per_connection"] == "delivery"
    assert (pc.max_connection_rate, pc.origins["max_connection_rate"]) == (None, "unset")
    assert (pc.suspend_duration, pc.origins["suspend_duration"]) == (300.0, "builtin")


def test_default_source_layer_applies_to_every_site_below_site_layers() -> None:
    assert resolve("ip2", "mx.example.net").tls == "required"
    pc = resolve("ip2", GOOGLE)
    assert (pc.tls, pc.origins["tls"]) == ("required", "default.source.ip2")
    assert pc.connection_limit == 5  # gmail.com beats default.source.ip2


def test_key_equal_to_the_domain_matches_before_its_rollup_is_known() -> None:
    pc = resolve_path(CONFIG.shaping, CONFIG.delivery, source="ip1", site="unresolved",
                      domain="Yahoo.COM", key_sites={})
    assert pc.max_connection_rate == parse_rate("10/m")


def test_no_shaping_section_at_all_uses_delivery() -> None:
    cfg = parse_config("", "empty.toml")
    pc = resolve_path(cfg.shaping, cfg.delivery, source="default", site="s")
    assert pc.connection_limit == cfg.delivery.connection_limit
    assert pc.max_message_rate is None
    assert set(pc.origins.values()) <= {"delivery", "builtin", "unset"}


def test_explain_lists_every_value_with_its_layer() -> None:
    out = resolve("ip1", GOOGLE).explain()
    assert out["max_message_rate"] == {"value": "100/s burst 20", "from": "gmail.com"}
    assert out["connection_limit"] == {"value": 2, "from": "gmail.com.source.ip1"}
    assert out["tls"] == {"value": "opportunistic", "from": "delivery"}


def test_same_inputs_same_path_config() -> None:
    assert resolve("ip1", GOOGLE) == resolve("ip1", GOOGLE)
    assert resolve("ip1", GOOGLE).key == f"ip1->{GOOGLE}"
