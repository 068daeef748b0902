"""`Inbound`: mail that arrives for the bounce domain(s), turned into feedback events.

The SMTP listener takes mail for [bounces] domain (and the tenants' own bounce domains) from
anyone, without AUTH, and never relays or queues it: at the end of DATA `receive()` reads it
and answers.

  u+TOKEN@domain   a mailto unsubscribe (RFC 2369 / 8058): event `unsubscribed`
  an RFC 3464 DSN  each failed recipient: event `bounced` with `async: true` and the
                   category of the same Classifier as synchronous replies
  an RFC 5965 ARF  event `complained` (feedback types abuse, fraud, virus, other)
  anything else    550 5.1.1: nobody reads mail at this domain

Which message, tenant and recipient a report is about: the VERP token of the address it
was sent to (b+TOKEN@, authoritative, recipient included), else the return path in the
returned headers (Return-Path: <b+TOKEN@...>), else the `X-Mta-Ref` trace header (message
and tenant) with the recipient the report names. A report that names nothing of ours (a
forged or foreign token, no reference) is answered 250 like any other, logged, and nothing
is recorded: a forger learns nothing. Only the first [bounces] max_report_size bytes are
parsed, in a thread, so a 10 MB report neither blocks the loop nor costs more than 1 MiB.

Every report is one `feedback` event (kind dsn|arf|unsubscribe|other, outcome
recorded|ignored|refused), which mta_feedback_reports counts. Suppressions listen to the
`bounced`, `complained` and `unsubscribed` events (mta/suppress/service.py).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from mta.bounce.classify import Classifier
from mta.bounce.feedback import Feedback, domain_of
from mta.bounce.parse import DeliveryReport, FeedbackReport, parse_arf, parse_dsn
from mta.bounce.token import Ref
from mta.observe.events import EventLog
from mta.rfc5321.reply import Reply

__all__ = ["R_NOT_A_REPORT", "R_RECEIVED", "Inbound"]

log = logging.getLogger("mta.bounce.inbound")

R_RECEIVED = Reply(250, "2.0.0", "Ok: report received")
R_NOT_A_REPORT = Reply(
    550, "5.1.1", "No such user: this address takes only delivery status and feedback reports"
)

COMPLAINTS = frozenset({"abuse", "fraud", "virus", "other"})
_RETURN_PATH_RE = re.compile(r"<?b\+([a-z2-7]+)@([^>\s]+)>?", re.IGNORECASE)


class _Envelope(Protocol):
    @property
    def recipients(self) -> Any: ...

    mail_from: str
    client_ip: str


@dataclass
class _Outcome:
    kind: str  # dsn | arf | unsubscribe | other
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    why: str = ""  # for a report that is ignored

    @property
    def outcome(self) -> str:
        if self.kind == "other":
            return "refused"
        return "recorded" if self.events else "ignored"


class Inbound:
    def __init__(self, feedback: Feedback, events: EventLog, classifier: Classifier) -> None:
        self.feedback = feedback
        self.events = events
        self.classifier = classifier

    def reload(self, feedback: Feedback, classifier: Classifier | None = None) -> None:
        self.feedback = feedback
        if classifier is not None:
            self.classifier = classifier

    def claims(self, envelope: _Envelope) -> bool:
        """Whether a transaction's mail is for the feedback domains (the SMTP session keeps
        such recipients in a transaction of their own)."""
        rcpts = envelope.recipients
        return bool(rcpts) and self.feedback.claims(rcpts[0].address)

    # --- one-click (mta/http/unsubscribe.py) ----------------------------------------------

    def unsubscribe_ref(self, token: str) -> Ref | None:
        """The recipient an unsubscribe token names, or None (not ours, or message-level:
        a link of a message to several recipients, which cannot say who clicked)."""
        tokens = self.feedback.tokens
        ref = tokens.verify("u", token) if tokens is not None else None
        return ref if ref is not None and ref.recipient else None

    def unsubscribe(self, ref: Ref, via: str) -> None:
        self.events.emit("unsubscribed", **_fields(ref, via=via))
        self.events.emit(
            "feedback", kind="unsubscribe", outcome="recorded", recipient=ref.recipient, via=via
        )

    # --- the end of DATA ------------------------------------------------------------------

    async def receive(self, envelope: _Envelope, data: bytes) -> Reply:
        rcpt = envelope.recipients[0].address
        head = data[: self.feedback.max_report_size]
        try:
            out = await asyncio.to_thread(self.read, rcpt, head)
        except Exception:  # a parser bug must cost this report, never the listener
            log.exception("feedback: cannot read a report for %s", rcpt)
            out = _Outcome("other", why="unreadable")
        for name, fields in out.events:
            self.events.emit(name, **fields)
        self.events.emit(
            "feedback",
            kind=out.kind,
            outcome=out.outcome,
            recipient=rcpt,
            sender=envelope.mail_from,
            client_ip=envelope.client_ip,
            reason=out.why or None,
        )
        if out.outcome == "ignored":
            log.info(
                "feedback: %s report to %s from %s ignored: %s",
                out.kind,
                rcpt,
                envelope.client_ip,
                out.why,
            )
        return R_NOT_A_REPORT if out.kind == "other" else R_RECEIVED

    def read(self, rcpt: str, data: bytes) -> _Outcome:
        """What one report says (pure: no I/O, run in a thread)."""
        local = rcpt.strip().strip("<>").rpartition("@")[0]
        prefix, _, token = local.partition("+")
        prefix = prefix.lower()
        tokens = self.feedback.tokens
        if prefix == "u" and token:
            ref = tokens.verify("u", token) if tokens is not None else None
            out = _Outcome("unsubscribe")
            if ref is None or not ref.recipient:
                out.why = "no valid unsubscribe token"
            else:
                out.events.append(("unsubscribed", _fields(ref, via="mailto")))
            return out
        verp = (
            tokens.verify("b", token) if (tokens is not None and prefix == "b" and token) else None
        )
        dsn = parse_dsn(data)
        if dsn is not None:
            return self._dsn(dsn, verp)
        arf = parse_arf(data)
        if arf is not None:
            return self._arf(arf, verp)
        return _Outcome("other", why="neither a DSN nor an ARF report")

    def _refs(
        self, headers: tuple[tuple[str, str], ...], verp: Ref | None
    ) -> tuple[Ref | None, Ref | None]:
        """(recipient-level ref, message-level ref) from the envelope token, else from the
        returned headers' Return-Path and X-Mta-Ref."""
        tokens = self.feedback.tokens
        if verp is not None or tokens is None:
            return verp, None
        message = None
        for name, value in headers:
            key = name.lower()
            if key == "return-path" and (m := _RETURN_PATH_RE.search(value)):
                if domain_of(m.group(2)) in self.feedback.domains:
                    ref = tokens.verify("b", m.group(1))
                    if ref is not None:
                        return ref, None
            elif key == "x-mta-ref" and message is None:
                message = tokens.verify("m", value.strip())
        return None, message

    def _dsn(self, dsn: DeliveryReport, verp: Ref | None) -> _Outcome:
        out = _Outcome("dsn")
        failed = [r for r in dsn.recipients if r.action == "failed"]
        if not failed:
            out.why = "no failed recipient"  # delayed, delivered, relayed: not a bounce
            return out
        ref, message = self._refs(dsn.original_headers, verp)
        if ref is None and message is None:
            out.why = "names no message of ours"
            return out
        for r in failed:
            named = {r.final_recipient.lower(), (r.original_recipient or "").lower()}
            if ref is not None:
                if ref.recipient.lower() not in named and len(failed) > 1:
                    continue  # another recipient's block: this token is about one
                who, base = ref.recipient, ref
            else:
                assert message is not None
                who, base = r.original_recipient or r.final_recipient, message
            if "@" not in who:
                continue
            reply = r.reply()
            c = self.classifier.classify(reply)
            out.events.append(
                (
                    "bounced",
                    {
                        **_fields(base, recipient=who),
                        "async": True,
                        "reply": str(reply),
                        "category": str(c.category),
                        "status": r.status or None,
                        "remote_mta": r.remote_mta,
                        "reporting_mta": dsn.reporting_mta,
                    },
                )
            )
            if ref is not None:
                break
        if not out.events:
            out.why = "no recipient of ours in the report"
        return out

    def _arf(self, arf: FeedbackReport, verp: Ref | None) -> _Outcome:
        out = _Outcome("arf")
        if arf.feedback_type not in COMPLAINTS:
            out.why = f"feedback type {arf.feedback_type}"
            return out
        ref, message = self._refs(arf.original_headers, verp)
        if ref is not None:
            who = [ref.recipient]
            base = ref
        elif message is not None:
            who, base = [a for a in arf.recipients if "@" in a], message
        else:
            out.why = "names no message of ours"
            return out
        for address in who:
            out.events.append(
                (
                    "complained",
                    {
                        **_fields(base, recipient=address),
                        "feedback_type": arf.feedback_type,
                        "user_agent": arf.user_agent,
                        "source_ip": arf.source_ip,
                    },
                )
            )
        if not out.events:
            out.why = "the report names no recipient (redacted)"
        return out


def _fields(ref: Ref, **extra: Any) -> dict[str, Any]:
    return {"id": ref.queue_id, "tenant": ref.tenant, "recipient": ref.recipient, **extra}
