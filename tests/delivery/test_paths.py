"""The table of egress paths: each (source, site) gets its frozen settings from the layered
config once, keeps its pool across a reload that changes them, and the tenant -> pool
fallback follows parents as policy does."""

from __future__ import annotations

from mta.config import parse_config
from mta.delivery.paths import PathTable, config_pool
from mta.delivery.pool import MxHost
from mta.shaping import Shaper

TOML = '''
[server]
hostname = "mta.test"

[delivery]
port = 2525
idle_timeout = "7s"
connect_timeout = "9s"

[[egress.source]]
name = "a"
address = "127.0.0.10"
ehlo_name = "a.mta.test"
[[egress.source]]
name = "b"
address = "127.0.0.11"

[shaping.default]
connection_limit = 5
max_deliveries_per_connection = 40

[shaping."mx.dest.test"]
connection_limit = 2

[shaping."mx.dest.test".source.b]
connection_limit = 1
'''
HOSTS = [MxHost("mx.dest.test", ("127.0.0.4",))]


def _table(toml: str = TOML) -> tuple[PathTable, Shaper]:
    cfg = parse_config(toml, "t.toml")
    shaper = Shaper(cfg)
    admitted = []
    table = PathTable(cfg, shaper, lambda p: admitted.append(p) or (lambda: None))
    table.set_hosts("mx.dest.test", HOSTS)
    return table, shaper


def test_each_path_is_built_once_from_the_layers() -> None:
    table, shaper = _table()
    a = table.get("mx.dest.test", shaper.egress.sources["a"])
    b = table.get("mx.dest.test", shaper.egress.sources["b"])
    assert table.get("mx.dest.test", shaper.egress.sources["a"]) is a
    assert (a.settings.key, a.settings.connection_limit, a.settings.max_deliveries) == (
        "a->mx.dest.test", 2, 40)
    assert b.settings.connection_limit == 1
    assert (a.settings.client.ehlo_name, b.settings.client.ehlo_name) == ("a.mta.test",
                                                                          "mta.test")
    assert a.settings.client.connect_timeout == 9.0
    assert (a.settings.port, a.settings.idle_timeout) == (2525, 7.0)
    assert (a.pool.source, a.pool.port, a.pool.connection_limit) == ("127.0.0.10", 2525, 2)
    assert a.pool.name == "a->mx.dest.test" and a.pool.admit is not None
    assert table.capacity("mx.dest.test") == 3  # 2 from a + 1 from b
    assert table.connection_count == 0
    assert sorted(table.keys()) == ["a->mx.dest.test", "b->mx.dest.test"]
    assert table.keys(["other.site"]) == []


def test_a_reload_refreezes_settings_and_keeps_the_pool() -> None:
    table, shaper = _table()
    a = table.get("mx.dest.test", shaper.egress.sources["a"])
    pool, before = a.pool, a.settings
    new = parse_config(TOML.replace("connection_limit = 2", "connection_limit = 4")
                       .replace("max_deliveries_per_connection = 40",
                                "max_deliveries_per_connection = 10"), "t.toml")
    shaper.reload(new)
    table.reload(new)
    assert a.pool is pool and a.settings is not before
    assert (a.settings.connection_limit, pool.connection_limit, pool.max_deliveries) == (
        4, 4, 10)
    assert pool.settings is a.settings.client


def test_a_reload_moves_the_port_and_idle_timeout_of_existing_pools() -> None:
    """[delivery] port and idle_timeout are path settings too: after a reload the pool
    dials the new port and keeps idle connections for the new time."""
    table, shaper = _table()
    a = table.get("mx.dest.test", shaper.egress.sources["a"])
    new = parse_config(TOML.replace("port = 2525", "port = 2600")
                       .replace('idle_timeout = "7s"', 'idle_timeout = "3s"'), "t.toml")
    shaper.reload(new)
    table.reload(new)
    assert (a.settings.port, a.pool.port) == (2600, 2600)
    assert (a.settings.idle_timeout, a.pool.idle_timeout) == (3.0, 3.0)


def test_a_reload_moves_a_source_to_its_new_address_and_ehlo_name() -> None:
    table, shaper = _table()
    a = table.get("mx.dest.test", shaper.egress.sources["a"])
    new = parse_config(TOML.replace('address = "127.0.0.10"', 'address = "127.0.0.12"')
                       .replace('ehlo_name = "a.mta.test"', 'ehlo_name = "a2.mta.test"'),
                       "t.toml")
    shaper.reload(new)
    table.reload(new)
    assert (a.source.address, a.pool.source) == ("127.0.0.12", "127.0.0.12")
    assert a.settings.client.ehlo_name == a.pool.settings.ehlo_name == "a2.mta.test"


def test_new_hosts_reach_the_existing_pools() -> None:
    table, shaper = _table()
    a = table.get("mx.dest.test", shaper.egress.sources["a"])
    hosts = [MxHost("mx2.dest.test", ("127.0.0.5",))]
    table.set_hosts("mx.dest.test", hosts)
    assert a.pool.hosts == hosts


def test_the_pool_fallback_follows_parents_like_policy() -> None:
    cfg = parse_config('''
[egress.pool.bulk]
sources = { default = 1 }
[tenants.agency]
pool = "bulk"
[tenants.client]
parent = "agency"
[tenants.own]
parent = "agency"
pool = "default"
[tenants.solo]
''', "t.toml")
    assert [config_pool(cfg.tenants, t) for t in ("agency", "client", "own", "solo",
                                                  "default", "unknown")] == [
        "bulk", "bulk", "default", "default", "default", "default"]
