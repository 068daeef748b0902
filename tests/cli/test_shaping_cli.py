"""`mta shaping ...` against a real daemon: suspensions (site, source, path, tenant) through
/api/v1/admin/shaping, and `show SITE` explaining each effective rule with its layer."""

from __future__ import annotations

import json

CONFIG = """
[shaping.default]
connection_limit = 3
max_message_rate = "100/m"

[shaping."example.test"]
max_message_rate = "10/m"
max_connection_rate = "2/s"
"""


def test_suspend_list_resume_a_site_and_a_path(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("shaping", "list")
    assert proc.returncode == 0 and proc.stdout == "no shaping suspensions\n"

    proc = mta.cli("shaping", "suspend", "site", "Example.TEST", "--reason", "421 storm",
                   "--duration", "1h")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("suspended site example.test until ")
    assert proc.stdout.endswith(" (421 storm)\n")
    proc = mta.cli("shaping", "suspend", "path", "default->other.test", "--reason", "ticket 9")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "suspended path default->other.test until lifted (ticket 9)\n"

    listed = mta.cli("shaping", "list")
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["SCOPE", "NAME", "SINCE", "UNTIL", "REASON"]
    assert [r.split()[:2] for r in rows] == [["path", "default->other.test"],
                                             ["site", "example.test"]]
    assert rows[0].split()[-3:] == ["lifted", "ticket", "9"]
    items = json.loads(mta.cli("shaping", "list", "--json").stdout)
    site = next(s for s in items if s["scope"] == "site")
    assert 3600 - 30 <= site["until"] - site["since"] <= 3600 + 30  # --duration 1h (± 30 s)

    # The suspension shows in the site's explanation, as delivery sees it.
    shown = json.loads(mta.cli("shaping", "show", "example.test", "--json").stdout)
    assert shown["suspension"]["reason"] == "421 storm"

    proc = mta.cli("shaping", "resume", "site", "example.test")
    assert proc.returncode == 0
    assert proc.stdout == "lifted the suspension of site example.test (421 storm)\n"
    proc = mta.cli("shaping", "resume", "site", "example.test")
    assert proc.returncode == 1
    assert proc.stderr == ("mta shaping resume: no suspension of site example.test "
                           "(not_found)\n")
    assert [s["scope"] for s in json.loads(
        mta.cli("shaping", "list", "--json").stdout)] == ["path"]


def test_show_names_the_layer_each_value_came_from(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("shaping", "show", "example.test")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "path default->example.test (source default, site example.test)"
    rules = {line.split()[0]: line.split()[1:] for line in lines[2:15]}
    assert rules["RULE"] == ["VALUE", "FROM"]
    assert rules["connection_limit"] == ["3", "default"]
    assert rules["max_message_rate"][-1] == "example.test"
    assert rules["max_connection_rate"][-1] == "example.test"
    assert rules["suspend_after"] == ["5", "builtin"]
    assert rules["max_deliveries_per_connection"][-1] == "delivery"
    assert "connections: 0 in use, window 3 of limit 3" in lines
    assert "suspension: none" in lines
    assert any(line.startswith("max_message_rate: ") for line in lines)

    other = json.loads(mta.cli("shaping", "show", "other.test", "--json").stdout)
    assert other["rules"]["max_message_rate"]["from"] == "default"
    assert other["rules"]["max_connection_rate"] == {"value": None, "from": "unset"}


def test_tenant_and_source_scopes_and_usage_errors(mta_factory):
    mta = mta_factory(CONFIG)
    for scope, name in (("tenant", "acme"), ("source", "ip1")):
        proc = mta.cli("shaping", "suspend", scope, name, "--reason", "hold")
        assert proc.returncode == 0, proc.stderr
    shown = json.loads(mta.cli("shaping", "show", "x.test", "--tenant", "acme",
                               "--json").stdout)
    assert shown["suspension"]["scope"] == "tenant"

    proc = mta.cli("shaping", "suspend", "galaxy", "x", "--reason", "r")
    assert proc.returncode == 64
    assert proc.stderr == ("mta shaping suspend: unknown scope 'galaxy': one of site, source, "
                           "path, tenant\n")
    for argv in (
                 ("shaping", "suspend", "site", "x.test", "--reason", "r", "--duration",
                  "soon"),
                 ("shaping", "suspend", "site", "x.test"),
                 ("shaping", "show")):
        proc = mta.cli(*argv)
        assert proc.returncode == 64, (argv, proc.stderr)
    proc = mta.cli("shaping", "suspend", "path", "no-arrow.test", "--reason", "r")
    assert proc.returncode == 1
    assert "not a path name: 'no-arrow.test' (a path is SOURCE->SITE)" in proc.stderr
