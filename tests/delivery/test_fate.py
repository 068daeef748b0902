"""fate.decide: every reply of the classifier's corpus (every category of rules.toml) and
the replies that stand for DNS and connection failures, against the fate they must get."""

from __future__ import annotations

import pytest

from mta.bounce import Category, Classifier
from mta.delivery.fate import Fate, RetryRules, attempt_signal, decide
from mta.delivery.pool import ConnectAttempt, SiteUnavailable
from mta.dns import DnsFailure
from mta.queue import RetrySchedule
from mta.rfc5321 import Reply
from tests.bounce.test_classify import CORPUS

NOW = 1_800_000_000.0
RECEIVED = NOW - 600  # queued ten minutes ago
EXPIRES = NOW + 3600
RULES = RetryRules(RetrySchedule((60.0, 300.0), 86400.0, rand=lambda: 0.5), 0.0)
CLASSIFIER = Classifier.load()


def _decide(reply: Reply, *, attempt: int = 1, warned: bool = False, now: float = NOW,
            expires_at: float = EXPIRES, rules: RetryRules = RULES) -> Fate:
    return decide(reply, attempt=attempt, warned=warned, received_at=RECEIVED,
                  expires_at=expires_at, now=now, classifier=CLASSIFIER, rules=rules)


@pytest.mark.parametrize(("category", "action", "text"), CORPUS,
                         ids=[c[2][:60] for c in CORPUS])
def test_each_corpus_reply_gets_the_fate_its_category_and_action_say(
        category: str, action: str | None, text: str) -> None:
    reply = Reply.parse(text)
    retry = (action or ("retry" if reply.is_transient else "bounce")) == "retry"
    fate = _decide(reply)
    assert (fate.kind, fate.category, fate.signal) == (
        "deferred" if retry else "bounced", category, category)
    assert fate.reply is reply
    if retry:
        assert fate.next_attempt == NOW + RULES.schedule.delay(1) and fate.dsn is None
        assert not fate.final and not fate.suppress
    else:
        assert fate.dsn == "failed" and fate.final and fate.next_attempt == 0.0
        assert fate.suppress == (category == "invalid_recipient")


def test_the_table_covers_every_category() -> None:
    assert {c for c, _, _ in CORPUS} == {c.value for c in Category}


@pytest.mark.parametrize("text", ["250 2.0.0 Ok: queued as 123", "251 2.1.5 forwarded"])
def test_a_positive_reply_is_delivered(text: str) -> None:
    fate = _decide(Reply.parse(text))
    assert (fate.kind, fate.category, fate.dsn, fate.signal) == ("delivered", "", None,
                                                                 "delivered")
    assert fate.final


@pytest.mark.parametrize(("failure", "kind", "category"), [
    (DnsFailure(False, "4.4.3", "DNS lookup of x.test timed out"), "deferred", "dns_failure"),
    # RFC 3463 5.1.2 "bad destination system address": the address cannot exist.
    (DnsFailure(True, "5.1.2", "x.test does not exist (NXDOMAIN)"), "bounced",
     "invalid_recipient"),
])
def test_dns_failures_retry_when_temporary_and_bounce_when_permanent(
        failure: DnsFailure, kind: str, category: str) -> None:
    fate = _decide(failure.reply())
    assert (fate.kind, fate.category) == (kind, category)


def test_a_site_nobody_answers_is_a_connection_failure_and_retries() -> None:
    err = SiteUnavailable([ConnectAttempt("mx.x.test", "127.0.0.9", Reply(
        421, "4.4.1", "connection to 127.0.0.9:25 refused"))])
    fate = _decide(err.reply, attempt=2)
    assert (fate.kind, fate.category) == ("deferred", "connection_failure")
    assert fate.next_attempt == NOW + RULES.schedule.delay(2)


def test_a_retryable_failure_at_or_after_expiry_expires_with_a_failed_dsn() -> None:
    reply = Reply(451, "4.3.0", "try later")
    for now in (EXPIRES, EXPIRES + 1):
        fate = _decide(reply, now=now)
        assert (fate.kind, fate.dsn, fate.final) == ("expired", "failed", True)
    assert _decide(reply, now=EXPIRES - 1).kind == "deferred"


def test_the_delay_warning_goes_once_after_the_configured_wait() -> None:
    rules = RetryRules(RULES.schedule, delay_warning=300.0)  # queued 600 s: due
    reply = Reply(451, "4.3.0", "try later")
    assert _decide(reply, rules=rules).dsn == "delayed"
    assert _decide(reply, rules=rules).warned
    assert _decide(reply, rules=rules, warned=True).dsn is None
    assert _decide(reply, rules=RetryRules(RULES.schedule, delay_warning=3600.0)).dsn is None
    assert _decide(reply).dsn is None  # 0: off


def test_one_attempt_gives_one_shaping_signal_the_first_slow_down() -> None:
    ok = _decide(Reply(250, "2.0.0", "ok"))
    bad = _decide(Reply(550, "5.1.1", "no such user"))
    slow = _decide(Reply(421, "4.7.0", "Try again later, closing connection."))
    assert attempt_signal([ok, bad]) == ("delivered", None)
    assert attempt_signal([bad, ok]) == ("invalid_recipient", bad.reply)
    assert attempt_signal([ok, bad, slow]) == ("rate_limited", slow.reply)
    assert attempt_signal([]) is None
