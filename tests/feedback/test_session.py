"""The SMTP session with feedback domains, as transcripts (sans-IO, tests/smtp's runner):
anyone may send to the bounce domain without AUTH, nowhere else, and such a recipient is
never mixed with others in one transaction nor sent to policy."""

from __future__ import annotations

from typing import Any

from mta.smtp.session import CheckRcpt
from tests.smtp.test_session import Run, default_decide

FB = frozenset({"bounces.mta.test"})


def test_an_unauthenticated_client_may_send_reports_to_the_bounce_domain_only():
    run = Run(ip="192.0.2.7", relay_networks=(), feedback_domains=FB)
    run("C: HELO remote.example\nS: 250 mx.test")
    run("""
        C: MAIL FROM:<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<someone@dest.test>
        S: 554 5.7.1 Relay access denied
        C: RCPT TO:<b+abc@Bounces.Mta.Test>
        S: 250 2.1.5 Ok
        C: DATA
        S: 354 End data with <CR><LF>.<CR><LF>
        C: Subject: report
        C:
        C: x
        C: .
        S: 250 2.0.0 Ok: queued as 00000001
    """)
    [d] = run.delivered
    assert [r.address for r in d.envelope.recipients] == ["b+abc@Bounces.Mta.Test"]


def test_without_feedback_domains_mail_still_needs_auth():
    run = Run(ip="192.0.2.7", relay_networks=())
    run("C: HELO remote.example\nS: 250 mx.test")
    run("C: MAIL FROM:<>\nS: 530 5.7.0 Authentication required")


def test_a_report_recipient_is_not_asked_of_policy_and_is_never_mixed():
    asked: list[str] = []

    def decide(ev: Any) -> Any:
        if isinstance(ev, CheckRcpt):
            asked.append(ev.address)
        return default_decide(ev, run.delivered)

    run = Run(feedback_domains=FB, decide=decide)  # a relay client (tenant "default")
    run("C: HELO client\nS: 250 mx.test")
    run("""
        C: MAIL FROM:<a@shop.test>
        S: 250 2.1.0 Ok
        C: RCPT TO:<ok@dest.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<fbl@bounces.mta.test>
        S: 452 4.5.3 Reports to this domain go in a transaction of their own
        C: RSET
        S: 250 2.0.0 Ok
        C: MAIL FROM:<>
        S: 250 2.1.0 Ok
        C: RCPT TO:<fbl@bounces.mta.test>
        S: 250 2.1.5 Ok
        C: RCPT TO:<ok@dest.test>
        S: 452 4.5.3 Reports to this domain go in a transaction of their own
    """)
    assert asked == ["ok@dest.test"]
