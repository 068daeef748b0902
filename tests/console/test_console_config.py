"""[console]: accounts as `mta check-config` sees them; every mistake names its key."""

from __future__ import annotations

import pytest

from mta.config import ConfigError, parse_config
from mta.smtp.auth import hash_password

H = hash_password("pw", ln=4)


def test_accounts_load_with_roles_and_tenants():
    cfg = parse_config(f"""
[tenants.acme]
[console]
session_idle = "10m"
[console.accounts.olga]
password = "{H}"
role = "operator"
[console.accounts.acme]
password = "{H}"
tenant = "acme"
""", "c.toml")
    assert cfg.console.session_idle == 600
    assert cfg.console.accounts["olga"].role == "operator"
    assert cfg.console.accounts["acme"].tenant == "acme"


@pytest.mark.parametrize(("body", "error"), [
    ('password = "H"\nrole = "root"',
     "console.accounts.x: role: must be one of viewer, operator, admin"),
    ('password = "plain"', "console.accounts.x.password: expected a scrypt hash from "
                           "`mta passwd`"),
    ('password = "H"\ntenant = "nobody"', "console.accounts.x.tenant: unknown tenant 'nobody'"),
    ('password = "H"\ncolour = "red"', "console.accounts.x.colour: unknown key"),
])
def test_a_bad_account_is_named(body, error):
    with pytest.raises(ConfigError) as exc:
        parse_config("[console.accounts.x]\n" + body.replace('"H"', f'"{H}"'), "c.toml")
    assert exc.value.errors == [f"c.toml: {error}"]


def test_a_bad_disk_alert_threshold_is_named():
    with pytest.raises(ConfigError) as exc:
        parse_config("[console]\ndisk_alert_free = 0\n", "c.toml")
    assert "disk_alert_free" in exc.value.errors[0]
