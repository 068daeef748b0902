"""What becomes of one recipient after one attempt: a pure decision, no I/O, no clock.

`decide()` maps a reply (a remote SMTP reply, or the reply standing for a connection or
DNS failure: `SiteUnavailable.reply`, `DnsFailure.reply()`), the attempt number, the
recipient's state, the time and the retry rules to a `Fate`:

    delivered             a positive reply
    deferred until T      a failure the classifier retries, before the message expires
    expired               a failure it retries, at or after the message's expiry
    bounced               a failure it does not retry (bounce/rules.toml `action`)

Each fate also says which DSN it owes (`failed` for bounced and expired, `delayed` once
per recipient after [delivery] delay_warning), the shaping signal it gives, and a
suppression hint (the address does not exist). The dispatcher applies fates
(mta.delivery.outcomes); `attempt_signal()` picks the one shaping signal of an attempt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mta.bounce.classify import Action, Category, Classifier
from mta.queue import RetrySchedule
from mta.rfc5321.reply import Reply
from mta.shaping import SLOWDOWN_CATEGORIES

__all__ = ["Fate", "RetryRules", "attempt_signal", "decide"]

FateKind = Literal["delivered", "deferred", "bounced", "expired"]


@dataclass(frozen=True, slots=True)
class RetryRules:
    """What decides between a retry and the end: the schedule, and the delay warning."""

    schedule: RetrySchedule
    delay_warning: float = 0.0  # seconds queued before a "delayed" DSN; 0: never


@dataclass(frozen=True, slots=True)
class Fate:
    kind: FateKind
    reply: Reply
    category: str = ""  # the classifier's category; "" for delivered
    next_attempt: float = 0.0  # deferred: when to try again (unix time)
    dsn: Literal["failed", "delayed"] | None = None  # the DSN this fate owes the sender
    signal: str = "delivered"  # what this reply tells shaping (a category or "delivered")
    suppress: bool = False  # hint: the address does not exist (a permanent bad mailbox)

    @property
    def final(self) -> bool:
        return self.kind != "deferred"

    @property
    def warned(self) -> bool:
        """A deferral that sends the "delayed" DSN (the spool remembers it)."""
        return self.dsn == "delayed"


def _wants_delay(notify: str | None) -> bool | None:
    """The recipient's NOTIFY on delay warnings (RFC 3461 4.1): True for an explicit
    DELAY, False for NEVER or a list without DELAY, None when NOTIFY was not given."""
    if notify is None or not notify.strip():
        return None
    return "DELAY" in {k.strip().upper() for k in notify.split(",")}


def decide(reply: Reply, *, attempt: int, warned: bool, received_at: float,
           expires_at: float, now: float, classifier: Classifier,
           rules: RetryRules, notify: str | None = None) -> Fate:
    """The fate of one recipient whose attempt number `attempt` (1 for the first) got
    `reply`. `warned`: a "delayed" DSN went out for it already; `expires_at`: when the
    message's recipients expire (its class's max age, else [delivery] max_age); `notify`:
    its NOTIFY= as received. Without NOTIFY a delay warning goes out once the message has
    waited [delivery] delay_warning (0: never); an explicit NOTIFY=DELAY gets one after
    that wait too, or at its first deferral when delay_warning is 0; NOTIFY=NEVER or a
    NOTIFY without DELAY never gets one."""
    if reply.is_positive:
        return Fate("delivered", reply)
    c = classifier.classify(reply)
    category = str(c.category)
    if c.action != Action.RETRY:
        return Fate("bounced", reply, category, dsn="failed", signal=category,
                    suppress=c.category == Category.INVALID_RECIPIENT)
    if now >= expires_at:
        return Fate("expired", reply, category, dsn="failed", signal=category)
    after = rules.delay_warning
    wants = _wants_delay(notify)
    warn = (wants is not False and (wants or bool(after)) and not warned
            and now - received_at >= after)
    return Fate("deferred", reply, category, next_attempt=rules.schedule.next_retry(
        attempt, now), dsn="delayed" if warn else None, signal=category)


def attempt_signal(fates: Iterable[Fate]) -> tuple[str, Reply | None] | None:
    """The one shaping signal of an attempt (a 421 refusing 50 recipients is one "slow
    down", not 50): the first slow-down reply if any, else the first fate's; None when
    the attempt decided nothing."""
    first: tuple[str, Reply | None] | None = None
    for f in fates:
        sig = (f.signal, None if f.kind == "delivered" else f.reply)
        if f.signal in SLOWDOWN_CATEGORIES:
            return sig
        if first is None:
            first = sig
    return first
