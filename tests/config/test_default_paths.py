"""Where the spool and the events log go when the config does not say: beside the config
file (a checkout, a test), except for a config file under /etc, whose defaults are
/var/spool/mta and /var/log/mta/events.jsonl (FHS: /etc holds configuration only)."""

from __future__ import annotations

from pathlib import Path

from mta.config import parse_config

REPO = Path(__file__).resolve().parents[2]


def test_a_config_under_etc_keeps_its_data_in_var():
    cfg = parse_config("", "/etc/mta/mta.toml", Path("/etc/mta"))
    assert cfg.spool.dir == Path("/var/spool/mta")
    assert cfg.log.events == "/var/log/mta/events.jsonl"
    cfg = parse_config("", "/etc/mta.toml", Path("/etc"))
    assert cfg.spool.dir == Path("/var/spool/mta")


def test_paths_a_config_under_etc_names_are_its_own():
    cfg = parse_config('[spool]\ndir = "/srv/spool"\n[log]\nevents = ""\n',
                       "/etc/mta/mta.toml", Path("/etc/mta"))
    assert cfg.spool.dir == Path("/srv/spool")
    assert cfg.log.events == ""  # disabled stays disabled
    cfg = parse_config('[spool]\ndir = "q"\n[log]\nevents = "ev.jsonl"\n',
                       "/etc/mta/mta.toml", Path("/etc/mta"))
    assert cfg.spool.dir == Path("/etc/mta/q")  # relative to the file, as documented
    assert cfg.log.events == "/etc/mta/ev.jsonl"


def test_elsewhere_the_defaults_sit_beside_the_file(tmp_path):
    cfg = parse_config("", str(tmp_path / "mta.toml"), tmp_path)
    assert cfg.spool.dir == tmp_path / "var/spool"
    assert cfg.log.events == str(tmp_path / "var/log/events.jsonl")
    # A directory merely named like it is not /etc.
    cfg = parse_config("", "/etcetera/mta.toml", Path("/etcetera"))
    assert cfg.spool.dir == Path("/etcetera/var/spool")


def test_the_checkout_config_names_its_own_paths():
    cfg = parse_config((REPO / "config.toml").read_text(), "config.toml", REPO,
                       sections=("spool", "log"))  # not its TLS pair: made by `make run`
    assert cfg.spool.dir == REPO / "var/spool"
    assert cfg.log.events == str(REPO / "var/log/events.jsonl")
