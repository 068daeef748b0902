"""Volume licence: Ed25519 signature, validity dates, monthly volume, 80%/100% alerts."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import pytest

from mta.policy import (
    LicenceError,
    generate_licence_keypair,
    issue_licence,
    show_licence,
)
from mta.policy.licence import parse_licence

from .conftest import PARIS, send

PRIVATE, PUBLIC = generate_licence_keypair()


def write_licence(tmp_path: Path, volume: int = 10, until: date = date(2027, 11, 30),
                  start: date = date(2026, 1, 1), key: str = PRIVATE) -> Path:
    path = tmp_path / "mta.licence"
    path.write_text(issue_licence(key, licensee="Example Mail GmbH", valid_from=start,
                                  valid_until=until, monthly_volume=volume,
                                  max_connections=50))
    return path


def licence_toml(path: Path, public: str = PUBLIC) -> str:
    return (f'\n[policy]\ntimezone = "Europe/Paris"\nlicence_file = "{path}"\n'
            f'licence_public_key = "{public}"\n[tenants.news]\n')


def test_issue_and_show_round_trip(tmp_path):
    text = write_licence(tmp_path).read_text()
    lic = parse_licence(text, PUBLIC)
    assert (lic.licensee, lic.monthly_volume, lic.max_connections) == (
        "Example Mail GmbH", 10, 50)
    shown = show_licence(text, PUBLIC, today=date(2026, 11, 22))
    assert "valid:           2026-01-01 .. 2027-11-30 (valid on 2026-11-22)" in shown
    assert "monthly volume:  10 recipients/month" in shown


def test_any_edit_breaks_the_signature(tmp_path):
    doc = json.loads(write_licence(tmp_path).read_text())
    doc["licence"]["monthly_volume"] = 10_000_000
    with pytest.raises(LicenceError, match="signature does not verify"):
        parse_licence(json.dumps(doc), PUBLIC)
    _, other_public = generate_licence_keypair()
    with pytest.raises(LicenceError, match="signature does not verify"):
        parse_licence(write_licence(tmp_path).read_text(), other_public)


async def test_no_licence_configured_means_unlimited(engine):
    assert engine.licence_status().state == "none"
    assert await send(engine, "news", [f"r{i}@x.example" for i in range(20)]) == ["ok"] * 20


async def test_tampered_licence_refuses_to_send_with_a_clear_message(make_engine, tmp_path):
    path = write_licence(tmp_path)
    doc = json.loads(path.read_text())
    doc["licence"]["valid_until"] = "2099-12-31"
    path.write_text(json.dumps(doc))
    engine = await make_engine(base=licence_toml(path))
    out = await send(engine, "news", ["a@x.example"])
    assert out[0].startswith("451 4.3.5 Sending disabled: licence file ")
    assert "signature does not verify" in out[0]
    assert engine.licence_status().state == "invalid"


async def test_expired_licence_refuses_to_send(make_engine, tmp_path, clock):
    engine = await make_engine(base=licence_toml(write_licence(tmp_path,
                                                               until=date(2026, 11, 22))))
    assert await send(engine, "news", ["a@x.example"]) == ["ok"]
    clock.set(datetime(2026, 11, 23, 0, 0, tzinfo=PARIS))  # the last valid day is over
    assert await send(engine, "news", ["a@x.example"]) == [
        "451 4.3.5 Sending disabled: the licence of Example Mail GmbH expired on 2026-11-22"]
    assert engine.licence_status().state == "expired"


async def test_alerts_at_80_and_100_percent_then_refusal_naming_the_licence(
        make_engine, tmp_path, events, clock, caplog):
    engine = await make_engine(base=licence_toml(write_licence(tmp_path, volume=10)))
    assert await send(engine, "news", [f"a{i}@x.example" for i in range(7)]) == ["ok"] * 7
    assert not [e for e in events.recent if e["event"] == "licence_usage"]
    assert await send(engine, "news", ["a7@x.example"]) == ["ok"]
    alerts = [e for e in events.recent if e["event"] == "licence_usage"]
    assert [(e["level"], e["used"]) for e in alerts] == [(80, 8)]
    assert "licence usage at 80%" in caplog.text
    st = engine.licence_status()
    assert (st.used, st.volume, st.ratio) == (8, 10, 0.8)
    out = await send(engine, "news", ["a8@x.example", "a9@x.example", "a10@x.example"])
    assert out[:2] == ["ok", "ok"]
    assert out[2] == ("451 4.7.1 Licence volume exhausted: 10 of 10 recipients in 2026-11 "
                      "(licence of Example Mail GmbH)")
    assert [e["level"] for e in events.recent if e["event"] == "licence_usage"] == [80, 100]
    # At 100% new mail is refused at MAIL FROM already.
    r = await engine.check_mail(engine.transaction("news", "s@x.example"))
    assert str(r).startswith("451 4.7.1 Licence volume exhausted")
    # A new calendar month (in the configured zone) starts from zero.
    clock.set(datetime(2026, 12, 1, 0, 0, tzinfo=PARIS))
    assert await send(engine, "news", ["b@x.example"]) == ["ok"]
    assert engine.licence_status().used == 1


async def test_alert_is_raised_once_per_month_even_across_restarts(make_engine, tmp_path,
                                                                   events):
    base = licence_toml(write_licence(tmp_path, volume=10))
    engine = await make_engine(base=base)
    assert await send(engine, "news", [f"a{i}@x.example" for i in range(8)]) == ["ok"] * 8
    await engine.aclose()
    engine2 = await make_engine(base=base)
    assert engine2.licence_status().used == 8  # read back at start-up
    assert await send(engine2, "news", ["b@x.example"]) == ["ok"]
    assert [e["level"] for e in events.recent if e["event"] == "licence_usage"] == [80]


async def test_aborted_recipients_give_licence_volume_back(make_engine, tmp_path):
    engine = await make_engine(base=licence_toml(write_licence(tmp_path, volume=2)))
    txn = engine.transaction("news", "s@x.example")
    await engine.check_mail(txn)
    assert await engine.check_rcpt(txn, "a@x.example") is None
    assert await engine.check_rcpt(txn, "b@x.example") is None
    await engine.abort(txn)
    assert await send(engine, "news", ["c@x.example", "d@x.example"]) == ["ok", "ok"]
