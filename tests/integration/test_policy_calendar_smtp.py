"""Policy time through the real daemon: calendar resets, ends of operator limits, of
suspensions, of credit lots and of the licence, and the licence usage alerts, over SMTP.

`mta serve` runs with MTA_POLICY_CLOCK pointing at a file (mta.policy.FileClock): a test
writes the instant it wants there and the running daemon decides with it; nothing patches
time. The zone is America/New_York (UTC-5 in these weeks), so a local midnight is 05:00
UTC and a window keyed on UTC instead would show.
"""

from __future__ import annotations

import datetime as dt
import smtplib
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mta.policy import FileClock
from mta.policy.clock import CLOCK_ENV
from mta.policy.licence import generate_licence_keypair, issue_licence
from mta.smtp.auth import hash_password
from tests.support.daemon import MtaProcess

NY = ZoneInfo("America/New_York")
PW = "pw-123456"
LICENSEE = "Example Sender Ltd"


def ny(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=NY)


def _config(extra: str = "") -> str:
    pw = hash_password(PW, ln=10)
    users = "".join(f'[users.{t}]\ntenant = "{t}"\npassword = "{pw}"\n'
                    for t in ("day", "month", "shop", "news"))
    return f"""
[policy]
timezone = "America/New_York"
{extra}

[plans.daily]
messages_per_day = 2
[plans.monthly]
unique_recipients_per_month = 2

[tenants.day]
plan = "daily"
[tenants.month]
plan = "monthly"
[tenants.shop]
prepaid = true
[tenants.news]

{users}"""


Start = Callable[..., tuple[MtaProcess, FileClock]]


@pytest.fixture
def clocked_mta(tmp_path: Path) -> Iterator[Start]:
    """start(extra_toml, at) -> (daemon, its policy clock); every daemon is killed after."""
    started: list[MtaProcess] = []

    def start(extra_toml: str, at: dt.datetime, **kw: object) -> tuple[MtaProcess, FileClock]:
        workdir = tmp_path / f"mta{len(started)}"
        workdir.mkdir()
        path = workdir / "policy-clock"
        path.write_text(f"{at.timestamp()!r}\n")
        mta = MtaProcess(workdir, extra_toml, **kw)  # type: ignore[arg-type]
        mta.env[CLOCK_ENV] = str(path)
        started.append(mta)
        mta.start()
        return mta, FileClock(path)

    yield start
    for mta in started:
        mta.kill()


def _session(mta: MtaProcess, user: str | None = None) -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=20)
    s.ehlo("client.test")
    if user:
        s.login(user, PW)
    return s


def _send(mta: MtaProcess, user: str | None, rcpts: list[str],
          sender: str = "a@sender.test") -> list[tuple[int, bytes]]:
    """One transaction: the MAIL reply (if refused) or one reply per RCPT; DATA if any
    recipient was accepted."""
    with _session(mta, user) as s:
        code, text = s.mail(sender)
        if code != 250:
            return [(code, text)]
        replies = [s.rcpt(r) for r in rcpts]
        if any(c == 250 for c, _ in replies):
            assert s.data(b"Subject: x\r\n\r\nhi\r\n")[0] == 250
    return replies


def _cli(mta: MtaProcess, *args: str) -> str:
    proc = mta.cli(*args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _metrics(mta: MtaProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_the_daemon_says_loudly_that_policy_time_comes_from_a_file(clocked_mta):
    mta, _ = clocked_mta(_config(), ny(2026, 11, 30, 12, 0))
    assert "POLICY TIME IS READ FROM A FILE" in mta.stderr


def test_daily_quota_resets_at_local_midnight_not_utc(clocked_mta):
    mta, clock = clocked_mta(_config(), ny(2026, 11, 30, 18, 50))  # 23:50 UTC
    assert [c for c, _ in _send(mta, "day", ["r1@dest.test", "r2@dest.test"])] == [250, 250]
    [(code, text)] = _send(mta, "day", ["r3@dest.test"])
    assert (code, text) == (451, b"4.7.1 Daily message limit of 2 reached for day "
                                 b"(plan daily); resets 2026-12-01 00:00 EST")
    clock.set(ny(2026, 11, 30, 19, 10))  # 00:10 UTC: a new UTC day, the same local day
    assert _send(mta, "day", ["r3@dest.test"])[0][0] == 451
    clock.set(ny(2026, 12, 1, 0, 0, 30))  # local midnight passed (tolerance: none needed)
    assert [c for c, _ in _send(mta, "day", ["r3@dest.test", "r4@dest.test"])] == [250, 250]


def test_monthly_unique_recipients_reset_on_the_first(clocked_mta):
    mta, clock = clocked_mta(_config(), ny(2026, 11, 30, 23, 0))  # already December in UTC
    replies = _send(mta, "month", ["a@dest.test", "b@dest.test", "c@dest.test"])
    assert [c for c, _ in replies] == [250, 250, 451]
    assert replies[2][1] == (b"4.7.1 Monthly unique-recipient limit of 2 reached for month "
                             b"(plan monthly); resets 2026-12-01 00:00 EST")
    # The same recipients again in the same month are not new ones.
    assert [c for c, _ in _send(mta, "month", ["a@dest.test", "b@dest.test"])] == [250, 250]
    clock.set(ny(2026, 12, 1, 0, 0, 10))
    replies = _send(mta, "month", ["c@dest.test", "d@dest.test", "e@dest.test"])
    assert [c for c, _ in replies] == [250, 250, 451]


def test_operator_limit_overrides_the_plan_until_it_ends(clocked_mta):
    mta, clock = clocked_mta(_config(), ny(2026, 11, 30, 10, 0))
    out = _cli(mta, "policy", "limit", "day", "messages_per_day", "1",
               "--until", "2026-11-30T12:00", "--reason", "complaint spike")
    assert out == "tenant day: messages_per_day = 1 until 2026-11-30 12:00:00 (complaint spike)\n"
    replies = _send(mta, "day", ["r1@dest.test", "r2@dest.test"])
    assert [c for c, _ in replies] == [250, 451]
    assert replies[1][1] == (b"4.7.1 Daily message limit of 1 reached for day (operator "
                             b"limit until 2026-11-30 12:00 EST: complaint spike); resets "
                             b"2026-12-01 00:00 EST")
    clock.set(ny(2026, 11, 30, 12, 0, 1))  # the operator limit has ended: the plan's 2 again
    replies = _send(mta, "day", ["r2@dest.test", "r3@dest.test"])
    assert [c for c, _ in replies] == [250, 451]
    assert b"(plan daily)" in replies[1][1]


def test_suspensions_with_an_end_end_by_themselves(clocked_mta):
    mta, clock = clocked_mta(_config(), ny(2026, 11, 30, 10, 0))
    out = _cli(mta, "policy", "suspend", "news", "--for", "2h", "--reason", "billing")
    assert out == "tenant news: all mail suspended until 2026-11-30 12:00:00 (billing)\n"
    out = _cli(mta, "policy", "suspend", "--sender-domain", "Spam.Example", "--until",
               "2026-11-30", "--reason", "phishing")
    assert out == "sender domain spam.example: suspended through 2026-11-30 (phishing)\n"

    assert _send(mta, "news", ["r@dest.test"]) == [
        (451, b"4.7.1 Tenant news is suspended until 2026-11-30 12:00 EST: billing")]
    assert _send(mta, "day", ["r@dest.test"], sender="x@spam.example") == [
        (451, b"4.7.1 Sender domain spam.example is suspended until 2026-12-01 00:00 EST: "
              b"phishing")]
    assert _send(mta, "day", ["r@dest.test"], sender="x@news.spam.example")[0][0] == 250

    clock.set(ny(2026, 11, 30, 12, 0, 1))
    assert _send(mta, "news", ["r@dest.test"])[0][0] == 250
    assert _send(mta, "day", ["r@dest.test"], sender="x@spam.example")[0][0] == 451
    clock.set(ny(2026, 12, 1, 0, 0, 1))
    assert _send(mta, "day", ["r@dest.test"], sender="x@spam.example")[0][0] == 250


def test_sender_domain_suspension_until_resumed_and_shown(clocked_mta):
    mta, _ = clocked_mta(_config(), ny(2026, 11, 30, 10, 0))
    _cli(mta, "policy", "suspend", "--sender-domain", "spam.example", "--reason", "abuse desk")
    for user in ("news", None):  # any tenant, authenticated or relayed as `default`
        assert _send(mta, user, ["r@dest.test"], sender="x@SPAM.example") == [
            (554, b"5.7.1 Sender domain spam.example is suspended: abuse desk")]
    assert _send(mta, "news", ["r@dest.test"], sender="x@ham.example")[0][0] == 250
    assert _cli(mta, "policy", "show", "--sender-domain", "spam.example") == (
        "sender domain spam.example: suspended: all mail until lifted (abuse desk)\n")
    assert _cli(mta, "policy", "resume", "--sender-domain", "spam.example") == (
        "sender domain spam.example: lifted 1 suspension(s)\n")
    assert _send(mta, "news", ["r@dest.test"], sender="x@spam.example")[0][0] == 250
    proc = mta.cli("policy", "resume", "--sender-domain", "spam.example")
    assert proc.returncode == 1
    assert proc.stderr == ("mta policy resume: no active suspension of sender domain "
                           "spam.example\n")


def test_credit_lot_expires_at_the_end_of_its_day(clocked_mta):
    mta, clock = clocked_mta(_config(), ny(2026, 11, 30, 23, 59))
    _cli(mta, "policy", "credits", "add", "shop", "5", "--paid", "--expires", "2026-11-30")
    assert _send(mta, "shop", ["r1@dest.test"])[0][0] == 250
    clock.set(ny(2026, 12, 1, 0, 0, 1))
    assert _send(mta, "shop", ["r2@dest.test"]) == [
        (452, b"4.7.1 Insufficient prepaid credits: shop has no paid, unexpired credit left")]


def _licence_toml(tmp_path: Path, *, volume: int, until: dt.date) -> str:
    private, public = generate_licence_keypair()
    path = tmp_path / "mta.licence"
    path.write_text(issue_licence(private, licensee=LICENSEE, valid_from=dt.date(2026, 11, 1),
                                  valid_until=until, monthly_volume=volume,
                                  max_connections=10))
    return f'licence_file = "{path}"\nlicence_public_key = "{public}"\n'


def test_licence_expiry_refuses_with_a_clear_message(clocked_mta, tmp_path):
    extra = _licence_toml(tmp_path, volume=1000, until=dt.date(2026, 11, 30))
    mta, clock = clocked_mta(_config(extra), ny(2026, 11, 30, 23, 59, 59))
    assert _send(mta, "news", ["r@dest.test"])[0][0] == 250
    clock.set(ny(2026, 12, 1, 0, 0, 1))  # 05:00 UTC: the last local day of validity is over
    assert _send(mta, "news", ["r@dest.test"]) == [
        (451, b"4.3.5 Sending disabled: the licence of Example Sender Ltd expired on "
              b"2026-11-30")]


def test_licence_usage_alerts_at_80_and_100_percent(clocked_mta, tmp_path):
    extra = _licence_toml(tmp_path, volume=5, until=dt.date(2026, 12, 31))
    mta, _ = clocked_mta(_config(extra), ny(2026, 11, 15, 12, 0))
    assert [c for c, _ in _send(mta, "news", [f"r{i}@dest.test" for i in range(3)])] == [
        250] * 3
    assert not [e for e in mta.events() if e["event"] == "licence_usage"]

    assert _send(mta, "news", ["r3@dest.test"])[0][0] == 250  # 4 of 5: 80%
    [alert] = mta.wait_events(lambda e: e["event"] == "licence_usage")
    assert (alert["level"], alert["used"], alert["volume"], alert["month"],
            alert["licensee"]) == (80, 4, 5, "2026-11", LICENSEE)
    assert f"licence usage at 80%: 4 of 5 recipients in 2026-11 (licence of {LICENSEE})" \
        in mta.stderr
    metrics = _metrics(mta)
    assert "mta_licence_used_recipients 4.0" in metrics
    assert "mta_licence_volume_recipients 5.0" in metrics
    assert 'mta_events_total{event="licence_usage"} 1.0' in metrics

    assert _send(mta, "news", ["r4@dest.test"])[0][0] == 250  # 5 of 5: 100%
    alerts = mta.wait_events(lambda e: e["event"] == "licence_usage" and e["level"] == 100)
    assert alerts and alerts[0]["used"] == 5
    assert "licence usage at 100%" in mta.stderr
    assert _send(mta, "news", ["r5@dest.test"]) == [
        (451, b"4.7.1 Licence volume exhausted: 5 of 5 recipients in 2026-11 (licence of "
              b"Example Sender Ltd)")]
    assert 'mta_events_total{event="licence_usage"} 2.0' in _metrics(mta)
