"""Inbound reports, without a socket (mta/bounce/inbound.py over the real parser and the
real classifier): which recipient a DSN is about, ARF feedback types, the Return-Path of
returned headers, and the headers stamped before signing (mta/bounce/stamp.py)."""

from __future__ import annotations

import dataclasses

import pytest

from mta.bounce.classify import Classifier
from mta.bounce.feedback import Feedback
from mta.bounce.inbound import Inbound
from mta.bounce.stamp import Unstampable, stamp
from mta.config import Config, parse_config
from mta.config.bounces import BouncesConfig
from mta.config.unsubscribe import UnsubscribeConfig
from mta.config.values import ConfigError
from mta.observe.events import EventLog
from tests.feedback.test_feedback_smtp import _arf, _dsn

QID = "018f3a2b4c5d000100"
SECRET = "unit-test-secret-0123456789"


def _cfg(**unsub) -> Config:
    return dataclasses.replace(
        Config(),
        bounces=BouncesConfig(
            domain="b.test", secret=SECRET, tenant_domains={"vip": "rp.vip.test"}
        ),
        unsubscribe=UnsubscribeConfig(**({"base_url": "https://u.test/"} | unsub)),
    )


@pytest.fixture
def inbound() -> Inbound:
    return Inbound(Feedback(_cfg()), EventLog(None), Classifier.load())


def test_a_dsn_to_the_verp_address_names_the_token_s_recipient(inbound):
    fb = inbound.feedback
    [verp] = fb.return_paths(
        QID, "shop", "a@shop.test", [dataclasses.make_dataclass("R", ["address"])("x@d.test")]
    )
    out = inbound.read(verp, _dsn("x@d.test"))
    [(name, ev)] = out.events
    assert name == "bounced" and ev["async"] is True
    assert (ev["id"], ev["tenant"], ev["recipient"], ev["category"]) == (
        QID,
        "shop",
        "x@d.test",
        "invalid_recipient",
    )
    # A mailbox full is no hard bounce: recorded, but the suppression listener skips it.
    out = inbound.read(verp, _dsn("x@d.test", status="5.2.2"))
    assert out.events[0][1]["category"] == "mailbox_full"


def test_a_returned_return_path_maps_an_arf_report_without_the_envelope(inbound):
    token = inbound.feedback.tokens.make("b", QID, "vip", "y@d.test")
    headers = f"Return-Path: <b+{token}@rp.vip.test>\r\nSubject: hi\r\n".encode()
    [(name, ev)] = inbound.read("fbl@b.test", _arf(headers, "redacted")).events
    assert (name, ev["tenant"], ev["recipient"], ev["feedback_type"]) == (
        "complained",
        "vip",
        "y@d.test",
        "abuse",
    )
    # A Return-Path at someone else's domain is not ours.
    other = headers.replace(b"rp.vip.test", b"elsewhere.test")
    assert inbound.read("fbl@b.test", _arf(other, "y@d.test")).events == []


def test_not_spam_and_auth_failure_reports_are_no_complaints(inbound):
    ref = inbound.feedback.tokens.make("m", QID, "shop")
    arf = _arf(f"X-Mta-Ref: {ref}\r\n".encode(), "z@d.test")
    assert inbound.read("fbl@b.test", arf).events[0][0] == "complained"
    for kind in (b"not-spam", b"auth-failure"):
        out = inbound.read(
            "fbl@b.test", arf.replace(b"Feedback-Type: abuse", b"Feedback-Type: " + kind)
        )
        assert out.events == [] and out.outcome == "ignored"


def test_a_delayed_dsn_is_no_bounce_and_junk_is_not_a_report(inbound):
    ref = inbound.feedback.tokens.make("m", QID, "shop")
    delayed = _dsn("x@d.test", f"X-Mta-Ref: {ref}\r\n".encode(), "4.2.0").replace(
        b"Action: failed", b"Action: delayed"
    )
    assert inbound.read("fbl@b.test", delayed).outcome == "ignored"
    assert inbound.read("fbl@b.test", b"\x00\xff" * 1000).kind == "other"
    assert (
        inbound.read(
            "fbl@b.test",
            b"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x",
        ).kind
        == "other"
    )


def test_stamp_adds_trace_and_one_click_headers_and_keeps_a_tenant_s_own():
    fb = Feedback(_cfg())
    msg = b"X-Mta-Ref: forged\r\nFrom: a@shop.test\r\n\r\nbody\r\n"
    out = stamp(fb, msg, msg_id=QID, tenant="shop", msg_class="marketing", recipients=["r@d.test"])
    head = out.split(b"\r\n\r\n")[0]
    assert head.count(b"X-Mta-Ref:") == 1 and b"forged" not in head
    assert b"<https://u.test/u/" in head and b"<mailto:u+" in head and b"@b.test>" in head
    assert b"List-Unsubscribe-Post: List-Unsubscribe=One-Click" in head
    token = head.split(b"https://u.test/u/")[1].split(b">")[0].decode()
    assert fb.tokens.verify("u", token).recipient == "r@d.test"
    own = b"List-Unsubscribe: <mailto:x@shop.test>\r\nFrom: a@shop.test\r\n\r\nb\r\n"
    out = stamp(fb, own, msg_id=QID, tenant="shop", msg_class="marketing", recipients=["r@d.test"])
    assert out.count(b"List-Unsubscribe") == 1
    plain = stamp(
        fb, msg, msg_id=QID, tenant="shop", msg_class="transactional", recipients=["r@d.test"]
    )
    assert b"List-Unsubscribe" not in plain


def test_marketing_to_several_recipients_is_refused_unless_it_brings_its_own_link():
    # One signed header cannot name who clicked: such a link could never be honoured.
    fb = Feedback(_cfg())
    msg = b"From: a@shop.test\r\n\r\nbody\r\n"
    two = ["r@d.test", "s@d.test"]
    with pytest.raises(Unstampable) as e:
        stamp(fb, msg, msg_id=QID, tenant="shop", msg_class="marketing", recipients=two)
    assert str(e.value.reply).startswith("550 5.5.3 Marketing mail gets a one-click")
    own = b"List-Unsubscribe: <mailto:x@shop.test>\r\n" + msg
    assert b"List-Unsubscribe: <mailto:x@shop.test>" in stamp(
        fb, own, msg_id=QID, tenant="shop", msg_class="marketing", recipients=two)
    relaxed = Feedback(dataclasses.replace(_cfg(), unsubscribe=UnsubscribeConfig(
        base_url="https://u.test", required=False)))
    out = stamp(relaxed, msg, msg_id=QID, tenant="shop", msg_class="marketing", recipients=two)
    assert b"List-Unsubscribe" not in out and b"X-Mta-Ref:" in out


def test_required_unsubscribe_without_a_way_to_add_one_refuses_marketing_mail():
    fb = Feedback(Config())
    msg = b"From: a@shop.test\r\n\r\nbody\r\n"
    with pytest.raises(Unstampable) as e:
        stamp(fb, msg, msg_id=QID, tenant="shop", msg_class="marketing", recipients=["r@x"])
    assert str(e.value.reply).startswith("550 5.7.0")
    assert (
        stamp(fb, msg, msg_id=QID, tenant="shop", msg_class="transactional", recipients=["r@x"])
        == msg
    )
    relaxed = Feedback(dataclasses.replace(Config(), unsubscribe=UnsubscribeConfig(required=False)))
    assert (
        stamp(relaxed, msg, msg_id=QID, tenant="shop", msg_class="marketing", recipients=["r@x"])
        == msg
    )


def test_the_return_path_stays_null_for_dsns_and_own_without_a_domain():
    fb = Feedback(_cfg())
    r = [dataclasses.make_dataclass("R", ["address"])("x@d.test")]
    assert fb.return_paths(QID, "shop", "", r) is None
    assert fb.return_paths(QID, "vip", "a@vip.test", r)[0].endswith("@rp.vip.test")
    assert Feedback(Config()).return_paths(QID, "shop", "a@shop.test", r) is None


@pytest.mark.parametrize(
    ("toml", "error"),
    [
        ('[bounces]\ndomain = "b.test"\n', "bounces: secret: at least 16"),
        ('[bounces]\ndomain = "B Test"\nsecret = "' + SECRET + '"\n', "is not a domain"),
        ("[bounces]\ncolour = 1\n", "bounces.colour: unknown key"),
        ('[unsubscribe]\nbase_url = "ftp://x"\n', "unsubscribe: base_url"),
    ],
)
def test_config_errors_name_the_key(toml, error):
    with pytest.raises(ConfigError) as e:
        parse_config('[smtp]\nlisten = ["127.0.0.1:2525"]\n' + toml)
    assert any(error in line for line in e.value.errors), e.value.errors
