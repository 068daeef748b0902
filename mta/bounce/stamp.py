"""Headers the feedback loop adds to an accepted message, before it is signed (so the DKIM
signature covers them): the `X-Mta-Ref` trace header (queue id and tenant, so that an ARF
report whose envelope is gone still maps back), and for marketing mail RFC 8058 one-click
unsubscribe (`List-Unsubscribe` with an https and a mailto URI, `List-Unsubscribe-Post`).

    data = stamp(feedback, data, msg_id=..., tenant=..., msg_class=..., recipients=[...])
    # bytes, or raises Unstampable when [unsubscribe] required cannot be met

The unsubscribe token names the recipient when the message has exactly one (the way bulk
mail is sent: one personalised copy each); a message to several gets a message-level token,
whose link can only be logged, not acted on (one signed header cannot name each of them).
A tenant's own List-Unsubscribe is kept as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from mta.bounce.feedback import Feedback
from mta.rfc5321.reply import Reply

__all__ = ["R_NO_UNSUBSCRIBE", "Unstampable", "stamp"]

# A link in a message to several recipients cannot say who clicked (the header is signed
# at ingest, once for all): an unsubscribe that could not be honoured is refused up front.
R_ONE_RECIPIENT = Reply(
    550, "5.5.3", "Marketing mail gets a one-click unsubscribe link per recipient: send one "
    "message per recipient, or set your own List-Unsubscribe")
R_NO_UNSUBSCRIBE = Reply(
    550,
    "5.7.0",
    "Marketing mail needs a List-Unsubscribe header "
    "(RFC 8058); add one, or ask the operator to set [unsubscribe] "
    "base_url and [bounces] domain",
)

# Our own trace header; one a client sent is forged (or a resend) and is dropped.
_REF_RE = re.compile(rb"(?im)^x-mta-ref[ \t]*:.*\r?\n(?:[ \t].*\r?\n)*")
_LIST_UNSUB_RE = re.compile(rb"(?im)^list-unsubscribe[ \t]*:")


class Unstampable(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


def _split(data: bytes) -> tuple[bytes, bytes]:
    if data.startswith(b"\r\n"):
        return b"", data
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data, b""
    return data[: end + 2], data[end + 2 :]


def stamp(
    feedback: Feedback,
    data: bytes,
    *,
    msg_id: str,
    tenant: str,
    msg_class: str,
    recipients: Sequence[str],
) -> bytes:
    tokens = feedback.tokens
    head, rest = _split(data)
    head = _REF_RE.sub(b"", head)
    add: list[str] = []
    if tokens is not None:
        add.append(f"X-Mta-Ref: {tokens.make('m', msg_id, tenant)}\r\n")
    if msg_class in feedback.unsubscribe_classes and not _LIST_UNSUB_RE.search(head):
        if len(recipients) > 1:
            if feedback.unsubscribe_required:
                raise Unstampable(R_ONE_RECIPIENT)
            return "".join(add).encode("ascii") + head + rest  # no link that cannot work
        uris = []
        domain = feedback.domain_for(tenant)
        if tokens is not None:
            token = tokens.make("u", msg_id, tenant, recipients[0])
            if feedback.base_url:
                uris.append(f"<{feedback.base_url}/u/{token}>")
            if domain:
                uris.append(f"<mailto:u+{token}@{domain}>")
        if uris:
            add.append("List-Unsubscribe: " + ",\r\n ".join(uris) + "\r\n")
            if feedback.base_url:  # one-click is the https URI's (RFC 8058 3.1)
                add.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        elif feedback.unsubscribe_required:
            raise Unstampable(R_NO_UNSUBSCRIBE)
    return "".join(add).encode("ascii") + head + rest
