"""RFC 8461 as text: the `_mta-sts` TXT record (3.1), the policy file (3.2) and MX
pattern matching (4.1), table-driven, malformed forms included."""

from __future__ import annotations

import pytest

from mta.tls import (
    StsPolicy,
    StsRecord,
    StsSyntaxError,
    choose,
    mx_matches,
    parse_policy,
    parse_record,
    select_record,
)

# --- 3.1 the TXT record -----------------------------------------------------------------

@pytest.mark.parametrize(("text", "ident"), [
    ("v=STSv1; id=20160831085700Z;", "20160831085700Z"),
    ("v=STSv1; id=20160831085700Z", "20160831085700Z"),  # the last delimiter is optional
    ("v=STSv1;id=abc", "abc"),
    ("v=STSv1 ;\tid=abc ; ", "abc"),  # *WSP around ";"
    ("v=STSv1; id=a1; ext=val-ue", "a1"),  # extensions are ignored
    ("v=STSv1; ext.x_y-z=1; id=Z9", "Z9"),
    ("v=STSv1; id=" + "a" * 32, "a" * 32),
])
def test_rfc8461_3_1_valid_records(text, ident):
    assert parse_record(text) == StsRecord(ident)


@pytest.mark.parametrize(("text", "why"), [
    ("id=abc; v=STSv1", "v=STSv1"),  # v must come first
    ("v=STSv2; id=abc", "v=STSv1"),
    ("v=stsv1; id=abc", "v=STSv1"),  # %s: case-sensitive
    ("v=STSv1", "no id"),
    ("v=STSv1;", "no id"),
    ("v=STSv1; ext=1", "no id"),
    ("v=STSv1; id=", "letters or digits"),
    ("v=STSv1; id=2016-08-31", "letters or digits"),
    ("v=STSv1; id=" + "a" * 33, "letters or digits"),
    ("v=STSv1; id abc", "name=value"),
    ("v=STSv1; id=abc; ext=a;b", "name=value"),
    ("v=STSv1; id=abc; ext=a=b", "malformed"),  # "=" is not in sts-ext-value
])
def test_rfc8461_3_1_malformed_records(text, why):
    with pytest.raises(StsSyntaxError, match=why):
        parse_record(text)


@pytest.mark.parametrize(("records", "expected"), [
    ([], None),
    (["v=spf1 -all"], None),  # other TXT records at the name are not MTA-STS
    (["v=spf1 -all", "v=STSv1; id=x1"], StsRecord("x1")),
])
def test_rfc8461_3_1_record_selection(records, expected):
    assert select_record(records) == expected


def test_rfc8461_3_1_more_than_one_record_is_no_policy():
    with pytest.raises(StsSyntaxError, match="exactly one"):
        select_record(["v=STSv1; id=a", "v=STSv1; id=b"])


# --- 3.2 the policy file ------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.example.net\r\n"
     "max_age: 604800\r\n",
     StsPolicy("enforce", 604800, ("mail.example.com", "*.example.net"))),
    # LF line ends, no final line end, fields in any order, white space after ":".
    ("mode:testing\nmax_age:  86400\nversion: STSv1\nmx: MX.Example.COM.",
     StsPolicy("testing", 86400, ("mx.example.com",))),
    ("version: STSv1\nmode: none\nmax_age: 0\n", StsPolicy("none", 0, ())),
    # Unknown fields are ignored (future extensions); a repeated mx is kept once.
    ("version: STSv1\nmode: enforce\nmx: a.test\nmx: a.test\nmax_age: 1\nfuture_x: 1\n",
     StsPolicy("enforce", 1, ("a.test",))),
    # max_age is capped at 31557600 seconds.
    ("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 9999999999\n",
     StsPolicy("enforce", 31557600, ("a.test",))),
])
def test_rfc8461_3_2_valid_policies(text, expected):
    assert parse_policy(text) == expected


GOOD = {"version": "STSv1", "mode": "enforce", "mx": "mx.a.test", "max_age": "86400"}


def _policy(**fields: str | None) -> str:
    merged = {**GOOD, **fields}
    return "".join(f"{k}: {v}\r\n" for k, v in merged.items() if v is not None)


@pytest.mark.parametrize(("text", "why"), [
    (_policy(version=None), "no version"),
    (_policy(mode=None), "no mode"),
    (_policy(max_age=None), "no max_age"),
    (_policy(mx=None), "without any mx"),
    (_policy(mode="testing", mx=None), "without any mx"),
    (_policy(version="STSv2"), "only STSv1"),
    (_policy(mode="Enforce"), "mode 'Enforce'"),  # values are case-sensitive
    (_policy(mode="report"), "mode 'report'"),
    (_policy(max_age="-1"), "max_age"),
    (_policy(max_age="1d"), "max_age"),
    (_policy(max_age="12345678901"), "max_age"),
    (_policy(max_age=""), "max_age"),
    (_policy(mx="*.*.a.test"), "not a domain"),
    (_policy(mx="mx.*.a.test"), "not a domain"),
    (_policy(mx="mx_1.a.test"), "not a domain"),
    (_policy(mx="-mx.a.test"), "not a domain"),
    (_policy(mx="*"), "not a domain"),
    (_policy(mx=""), "not a domain"),
    (_policy() + "mode: testing\r\n", "mode given twice"),
    (_policy() + "this line has no colon\r\n", "key: value"),
    (_policy() + " version: STSv1\r\n", "version given twice"),
    ("<html><body>Not found</body></html>", "key: value"),
    ("", "no version"),
])
def test_rfc8461_3_2_malformed_policies(text, why):
    with pytest.raises(StsSyntaxError, match=why):
        parse_policy(text)


def test_policy_round_trips_through_its_text():
    p = parse_policy(_policy(mx="*.a.test"))
    assert parse_policy(p.to_text()) == p


# --- 4.1 MX host matching -------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "host", "match"), [
    ("mail.example.com", "mail.example.com", True),
    ("mail.example.com", "MAIL.example.com.", True),  # case and a trailing dot don't count
    ("mail.example.com", "mx.example.com", False),
    ("mail.example.com", "x.mail.example.com", False),
    ("*.example.com", "mx1.example.com", True),
    ("*.example.com", "MX1.EXAMPLE.COM.", True),
    ("*.example.com", "example.com", False),  # the wildcard is one whole label
    ("*.example.com", "a.b.example.com", False),  # and only one
    ("*.example.com", ".example.com", False),
    ("*.example.com", "mx1.example.net", False),
    ("*.example.com", "mx1example.com", False),
])
def test_rfc8461_4_1_mx_patterns(pattern, host, match):
    assert mx_matches(pattern, host) is match


# --- what a delivery needs ----------------------------------------------------------------

ENFORCE = StsPolicy("enforce", 86400, ("mx.a.test",))
TESTING = StsPolicy("testing", 86400, ("mx.a.test",))


@pytest.mark.parametrize(("policy", "override", "label", "mode", "modes"), [
    (None, None, "opportunistic", "opportunistic", ("opportunistic", "disabled")),
    (ENFORCE, None, "mta-sts-enforce", "verify", ("verify",)),
    (TESTING, None, "mta-sts-testing", "opportunistic",
     ("verify", "opportunistic", "disabled")),
    (StsPolicy("none", 1, ()), None, "opportunistic", "opportunistic",
     ("opportunistic", "disabled")),
    (ENFORCE, "required", "required", "required", ("required",)),  # [tls] policy wins
    (ENFORCE, "mta-sts", "mta-sts-enforce", "verify", ("verify",)),
])
def test_choose_the_requirement(policy, override, label, mode, modes):
    req = choose("a.test", "opportunistic", policy, override)
    assert (req.label, req.mode, req.connect_modes()) == (label, mode, modes)


def test_enforce_accepts_only_verified_sessions_to_named_hosts():
    req = choose("a.test", "opportunistic", ENFORCE)
    assert req.may_use("MX.a.test") and not req.may_use("mx.evil.test")
    ok = dict(tls_active=True, tls_verified=True, verify_tried=True)
    assert req.accepts("mx.a.test", **ok)
    assert not req.accepts("mx.evil.test", **ok)
    assert not req.accepts("mx.a.test", tls_active=True, tls_verified=False,
                           verify_tried=True)


def test_testing_reports_what_enforce_would_refuse():
    req = choose("a.test", "opportunistic", TESTING)
    assert req.may_use("mx.evil.test")  # testing never refuses a host
    assert req.failure("mx.a.test", tls_verified=True, tls_error="") == ""
    assert "does not match" in req.failure("mx.evil.test", tls_verified=True, tls_error="")
    assert req.failure("mx.a.test", tls_verified=False,
                       tls_error="certificate verify failed") == "certificate verify failed"
    # A session opened without the check cannot tell: testing opens one that makes it.
    assert not req.accepts("mx.a.test", tls_active=True, tls_verified=False,
                           verify_tried=False)
