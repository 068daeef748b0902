"""`mta policy ...` against a real daemon (`mta serve` as a child process), through the admin
API, as an operator sees it: printed lines, JSON, exit codes (sysexits)."""

from __future__ import annotations

import json
import re

CONFIG = """
[plans.starter]
messages_per_day = 500

[tenants.acme]
plan = "starter"
prepaid = true

[tenants.acme-news]
parent = "acme"
"""


def test_credits_add_show_history_as_the_operator_sees_them(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("policy", "credits", "add", "acme", "1,000", "--paid",
                   "--expires", "2099-12-31", "--note", "order 7")
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(r"tenant acme: added lot \d+: 1,000/1,000 paid, usable through "
                        r"2099-12-31 \(order 7\)\n", proc.stdout)
    assert mta.cli("policy", "credits", "add", "acme", "250").returncode == 0

    show = mta.cli("policy", "credits", "show", "acme")
    assert show.returncode == 0, show.stderr
    first, *lots = show.stdout.splitlines()
    assert first == "tenant acme: balance 1,000, held 0, unpaid 250"
    # Lots are listed in spending order: the one that expires first (12 months) comes first.
    assert len(lots) == 2 and "250/250 unpaid" in lots[0] and "1,000/1,000 paid" in lots[1]
    summary = json.loads(mta.cli("policy", "credits", "show", "acme", "--json").stdout)
    assert summary["balance"] == 1000 and summary["unpaid"] == 250

    hist = mta.cli("policy", "credits", "history", "acme")
    assert hist.returncode == 0, hist.stderr
    header, *rows = hist.stdout.splitlines()
    assert header.split() == ["ENTRY", "TIME", "LOT", "DELTA", "KIND", "REFERENCE"]
    # An unpaid lot adds nothing usable until it is paid.
    assert [r.split()[5:7] for r in rows] == [["+1000", "add"], ["+0", "add"]]

    lot = summary["lots"][0]["id"]
    paid = mta.cli("policy", "credits", "paid", str(lot))
    assert paid.returncode == 0, paid.stderr
    assert paid.stdout.startswith(f"tenant acme: marked paid: lot {lot}: 250/250 paid")
    entries = json.loads(mta.cli("policy", "credits", "history", "acme", "--json").stdout)
    assert [(e["delta"], e["kind"]) for e in entries] == [(1000, "add"), (0, "add"),
                                                          (250, "paid")]


def test_limit_suspend_resume_and_show(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("policy", "limit", "acme", "messages_per_hour", "20",
                   "--until", "2099-01-31", "--reason", "complaint spike")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ("tenant acme: messages_per_hour = 20 through 2099-01-31 "
                           "(complaint spike)\n")

    proc = mta.cli("policy", "suspend", "acme", "--class", "marketing", "--reason", "abuse")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tenant acme: class marketing suspended until lifted (abuse)\n"

    show = mta.cli("policy", "show", "acme")
    assert show.returncode == 0, show.stderr
    lines = show.stdout.splitlines()
    assert lines[0].split() == ["TENANT", "PLAN", "PARENT", "STATUS", "PREPAID", "POOL",
                                "CLASSES"]
    assert lines[1].split() == ["acme", "starter", "-", "active", "yes", "-", "(all)"]
    usage = {line.split()[0]: line for line in lines if line.startswith("messages_per")}
    assert "operator limit" in usage["messages_per_hour"] and " 20 " in usage[
        "messages_per_hour"]
    assert "plan starter" in usage["messages_per_day"] and " 500 " in usage["messages_per_day"]
    assert lines[-1].startswith("tenant acme: balance 0")
    doc = json.loads(mta.cli("policy", "show", "acme", "--json").stdout)
    assert doc["tenant"]["name"] == "acme" and doc["credits"]["balance"] == 0

    proc = mta.cli("policy", "resume", "acme", "--class", "marketing")
    assert proc.returncode == 0 and proc.stdout == "tenant acme: lifted 1 suspension(s)\n"
    proc = mta.cli("policy", "resume", "acme")
    assert proc.returncode == 1
    assert proc.stderr == "mta policy resume: no active suspension of tenant acme\n"

    proc = mta.cli("policy", "unlimit", "acme", "messages_per_hour")
    assert proc.returncode == 0 and proc.stdout == "tenant acme: cleared 1 operator limit(s)\n"


def test_tenants_table_and_json(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("policy", "tenants")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert rows[0][0] == "TENANT"
    assert {r[0]: r[2] for r in rows[1:]} == {"acme": "-", "acme-news": "acme"}
    tenants = json.loads(mta.cli("policy", "tenants", "--json").stdout)
    assert sorted(t["name"] for t in tenants) == ["acme", "acme-news"]


def test_errors_say_what_is_wrong_with_sysexits_codes(mta_factory):
    mta = mta_factory(CONFIG)
    proc = mta.cli("policy", "credits", "add", "nobody", "10")
    assert proc.returncode == 1
    assert proc.stderr == ("mta policy credits add: unknown tenant 'nobody' (not_found)\n")
    proc = mta.cli("policy", "show", "nobody")
    assert proc.returncode == 1 and "unknown tenant 'nobody'" in proc.stderr
    proc = mta.cli("policy", "credits", "add", "acme", "10", "--expires", "2001-01-01")
    assert proc.returncode == 1 and "the expiry date is in the past" in proc.stderr

    # Usage errors are found before the daemon is asked: 64.
    for argv in (("policy", "credits", "add", "acme", "ten"),
                 ("policy", "limit", "acme", "messages_per_hour", "5", "--until", "soon"),
                 ("policy", "suspend", "acme"),  # --reason is required
                 ("policy",)):
        proc = mta.cli(*argv)
        assert proc.returncode == 64, (argv, proc.stderr)
        assert "error:" in proc.stderr and "usage:" in proc.stderr
    proc = mta.cli("policy", "limit", "acme", "messages_per_fortnight", "5")
    assert proc.returncode == 64
    assert proc.stderr.startswith("mta policy limit: unknown limit 'messages_per_fortnight': "
                                  "one of messages_per_hour, ")

    # A wrong admin token: 77 (EX_NOPERM), the config names the fix. The token is asked
    # for over TCP only: this CLI config turns the local admin socket off.
    text = mta.config_path.read_text().replace('admin_token = "',
                                               'admin_socket = ""\nadmin_token = "x')
    mta.config_path.write_text(text)
    proc = mta.cli("policy", "tenants")
    assert proc.returncode == 77 and "valid bearer token" in proc.stderr

    # The daemon stopped: 69 (EX_UNAVAILABLE).
    mta.terminate()
    proc = mta.cli("policy", "tenants")
    assert proc.returncode == 69 and "cannot reach the daemon" in proc.stderr


def test_a_broken_config_is_78_before_anything_is_asked(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[http]\nlisten = 8025\n")
    proc = subprocess.run([sys.executable, "-m", "mta.cli", "-c", str(bad), "policy",
                           "tenants"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 78
    assert proc.stderr.startswith(f"{bad}: http.listen:")
