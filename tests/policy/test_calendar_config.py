"""Calendar windows across DST and month ends; the [policy], [plans] and tenant keys."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mta.config import ConfigError
from mta.policy.calendar import add_months, period_key, period_reset

from .conftest import config

PARIS = ZoneInfo("Europe/Paris")
UTC = ZoneInfo("UTC")


def test_repeated_hour_when_clocks_go_back_gets_its_own_window():
    # 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice.
    first = datetime(2026, 10, 25, 0, 30, tzinfo=UTC).timestamp()  # 02:30 CEST
    second = first + 3600  # 02:30 CET
    assert period_key("hour", first, PARIS) == "2026-10-25T02"
    assert period_key("hour", second, PARIS) == "2026-10-25T02b"
    assert period_reset("hour", first, PARIS).timestamp() == first + 1800
    assert period_key("day", second, PARIS) == "2026-10-25"
    # That day is 25 hours long: it ends at local midnight.
    assert period_reset("day", first, PARIS) == datetime(2026, 10, 26, tzinfo=PARIS)


def test_month_windows_and_adding_months():
    ts = datetime(2026, 12, 31, 23, 59, tzinfo=PARIS).timestamp()
    assert period_key("month", ts, PARIS) == "2026-12"
    assert period_key("month", ts, UTC) == "2026-12"
    assert period_reset("month", ts, PARIS) == datetime(2027, 1, 1, tzinfo=PARIS)
    assert add_months(datetime(2027, 1, 31), 1) == datetime(2027, 2, 28)
    assert add_months(datetime(2027, 11, 15), 12) == datetime(2028, 11, 15)


def test_policy_keys_load_with_their_defaults():
    cfg = config()
    assert cfg.policy.charge == "accepted"
    assert cfg.policy.duplicate_window == 86400.0
    assert cfg.policy.class_max_age == {"transactional": 0.0, "marketing": 86400.0}
    assert cfg.plans["small"].messages_per_hour == 5
    assert cfg.tenants["shop"].prepaid is True
    assert cfg.tenants["acme"].messages_per_day is None  # unset: the plan decides


@pytest.mark.parametrize("extra, error", [
    ('[policy]\ncharge = "sent"\n', 'policy.charge: must be "accepted" or "delivered"'),
    ('[policy]\ntimezone = "Mars/Olympus"\n', "policy.timezone: unknown time zone"),
    ('[policy]\nlicence_file = "x.lic"\n',
     "policy.licence_public_key: required when licence_file is set"),
    ('[tenants.x]\nplan = "gold"\n', "tenants.x.plan: unknown plan 'gold'"),
    ('[tenants.x]\nparent = "nobody"\n', "tenants.x.parent: unknown tenant 'nobody'"),
    ('[tenants.x]\nclasses = ["promo"]\n', "tenants.x.classes: unknown message class"),
    ('[tenants."@x.example"]\n',
     "tenants.\"@x.example\": a tenant name cannot start with '@'"),
])
def test_policy_config_errors_name_file_and_key(extra, error):
    with pytest.raises(ConfigError) as e:
        config(base=extra)
    assert any(line.startswith("test.toml: " + error) for line in e.value.errors), \
        e.value.errors
