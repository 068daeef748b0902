"""One outbound MAIL..DATA transaction as a state machine, without I/O.

`Transaction` says what to write and how many replies to wait for (`Step`); the caller
writes, reads that many replies and hands them back with `receive()`, which answers the next
step or None when the transaction is over (`result` is then set). If the connection is lost
or a reply times out, `lost(why, partial)` settles it: refusals that did arrive stand, every
other recipient gets the transient `why`. Nothing here touches a socket or a clock, so a test
drives it reply by reply (or byte by byte through `wire.ReplyParser`), the way
`mta.smtp.session` is driven on the server side (h11's split).

Two shapes of the same transaction:
- pipelined (RFC 2920): [RSET] MAIL RCPT... DATA in one write, then the body in a second:
  two round trips per message (one with BDAT, below);
- lock-step: one command, one reply.
With `chunking` (the server offers RFC 3030 CHUNKING) the body goes as "BDAT n LAST" in
place of DATA and the dotted body, and its one reply is the final one. Pipelined, a body
of up to PIPELINED_BDAT_MAX goes in the same write as MAIL and RCPT: one round trip per
message instead of two (a BDAT needs no go-ahead; if every RCPT is refused the server reads
the chunk and refuses it, RFC 3030 2, and the refusals stand). A larger body waits for the
RCPT replies and goes only if one was accepted.

The outcome per recipient follows one rule (`outcomes`): a refusal at MAIL applies to all, a
refusal at RCPT to that recipient, and the reply to DATA (or after the dot) to every accepted
recipient.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mta.rfc5321 import Reply

__all__ = [
    "DeliveryResult",
    "Step",
    "Transaction",
    "TransactionResult",
    "connection_lost",
    "retry_indexes",
]


def connection_lost(text: str) -> Reply:
    """RFC 3463 4.4.2: bad connection (dropped, or no reply within the timeout)."""
    return Reply(421, "4.4.2", text)


@dataclass(slots=True)
class TransactionResult:
    """One MAIL..DATA transaction. `per_recipient[i]` is the outcome of `indexes[i]`."""

    indexes: tuple[int, ...]  # positions in the recipient list given to send()
    mail: Reply | None
    rcpt: tuple[Reply | None, ...]  # None: no reply arrived (connection lost)
    data: Reply | None  # reply to the DATA command (354 expected)
    final: Reply | None  # reply after the "."
    per_recipient: tuple[Reply, ...]


@dataclass(slots=True)
class DeliveryResult:
    """One message over one connection: an outcome per recipient, in the order given."""

    per_recipient: list[Reply]
    transactions: list[TransactionResult]


@dataclass(frozen=True, slots=True)
class Step:
    """Write `data`, then wait for `replies` replies within the command or the data timeout
    (RFC 5321 4.5.3.2); `what` names the wait for a timeout's reply text."""

    data: bytes
    replies: int
    what: str
    data_timeout: bool = False


_END_EMPTY = b".\r\n"
# The largest BDAT chunk sent before the RCPT replies are in: what a transaction whose
# recipients are all refused sends for nothing (most are accepted).
PIPELINED_BDAT_MAX = 1 << 20


class Transaction:
    """Build, call `start()`, then `receive()` until it answers None; or `lost()`.

    `rset`: the previous transaction on this connection left state at the server (RFC 5321
    4.1.1.5), so this one begins with RSET. After it ends, `needs_rset` and `closing` (a 421
    was heard: RFC 5321 3.8) tell the connection what it must do next.
    """

    __slots__ = ("_body", "_i", "_mail", "_rcpts", "_state", "chunk", "chunking", "closing",
                 "data_r", "mail_r", "needs_rset", "pipelined", "rcpt_r", "result", "rset")

    def __init__(self, mail: bytes, chunk: Sequence[int], rcpts: Sequence[bytes], body: bytes,
                 *, pipelined: bool, rset: bool = False, chunking: bool = False) -> None:
        """`body`: dot-stuffed with its final "." (wire.prepare_body); with `chunking`, the
        whole BDAT command and chunk (wire.bdat_command)."""
        self._mail = mail
        self._rcpts = rcpts
        self._body = body
        self.chunk = tuple(chunk)
        self.pipelined = pipelined
        self.chunking = chunking
        self.rset = rset
        self.mail_r: Reply | None = None
        self.rcpt_r: list[Reply | None] = [None] * len(rcpts)
        self.data_r: Reply | None = None
        self.result: TransactionResult | None = None
        self.needs_rset = False
        self.closing = False
        self._state = ""
        self._i = 0  # lock-step: the next RCPT

    # --- driving ----------------------------------------------------------------------
    def start(self) -> Step:
        if self.pipelined:
            batch = [b"RSET\r\n", self._mail] if self.rset else [self._mail]
            batch.extend(self._rcpts)
            self._state = "batch"
            if not self.chunking:
                batch.append(b"DATA\r\n")
                return Step(b"".join(batch), len(batch), "MAIL/RCPT/DATA")
            if len(self._body) <= PIPELINED_BDAT_MAX:
                self._state = "batch+bdat"
                batch.append(self._body)
                # The last reply is the final one, which may take the data timeout.
                return Step(b"".join(batch), len(batch), "MAIL/RCPT/BDAT",
                            data_timeout=True)
            return Step(b"".join(batch), len(batch), "MAIL/RCPT")
        if self.rset:
            self._state = "rset"
            return Step(b"RSET\r\n", 1, "RSET")
        return self._send_mail()

    def receive(self, replies: Sequence[Reply]) -> Step | None:
        """The replies the last step waited for; the next step, or None when done."""
        state = self._state
        if state == "batch":
            return self._batch(replies)
        if state == "batch+bdat":
            return self._batch_bdat(replies)
        (reply,) = replies
        if reply.code == 421:
            self.closing = True
        if state == "rset":
            return self._send_mail()
        if state == "mail":
            self.mail_r = reply
            if not reply.is_positive:
                return self._done(None)
            return self._next_rcpt()
        if state == "rcpt":
            return self._rcpt(reply)
        if state == "data":
            self.data_r = reply
            if reply.code != 354:
                self.needs_rset = True
                return self._done(None)
            self._state = "final"
            return Step(self._body, 1, "end of data", data_timeout=True)
        if state == "end-empty":
            return self._done(None)
        if state == "final":
            if self.chunking and not reply.is_positive:
                self.needs_rset = True  # RFC 3030 2: a refused BDAT is followed by RSET
            return self._done(reply)
        raise RuntimeError(f"transaction received a reply in state {state!r}")

    def lost(self, why: Reply, partial: Sequence[Reply] = ()) -> TransactionResult:
        """The connection is gone (or timed out) while waiting; `partial` are the replies
        to the last step that did arrive."""
        if self._state == "end-empty":  # the outcome was decided before the lost "."
            self._done(None)
            assert self.result is not None
            return self.result
        if self._state in ("batch", "batch+bdat"):
            got = list(partial[1:] if self.rset else partial)
            if got:
                self.mail_r = got[0]
            for i, r in enumerate(got[1:1 + len(self.rcpt_r)]):
                self.rcpt_r[i] = r
        mail_r = self.mail_r
        per: list[Reply] = []
        for r in self.rcpt_r:
            if mail_r is not None and not mail_r.is_positive:
                per.append(mail_r)
            elif r is not None and not r.is_positive:
                per.append(r)
            else:
                per.append(why)
        self._state = "done"
        self.result = TransactionResult(self.chunk, mail_r, tuple(self.rcpt_r), self.data_r,
                                        None, tuple(per))
        return self.result

    # --- pipelined --------------------------------------------------------------------
    def _take_envelope(self, replies: Sequence[Reply]) -> tuple[Reply, Sequence[Reply]]:
        """A pipelined batch's MAIL and RCPT replies into the transaction; (MAIL's reply,
        the batch's replies past a leading RSET's)."""
        if self.rset:
            replies = replies[1:]
        mail_r = self.mail_r = replies[0]
        self.rcpt_r = list(replies[1:1 + len(self.rcpt_r)])
        if any(r.code == 421 for r in replies):
            self.closing = True
        return mail_r, replies

    def _accepted(self, mail_r: Reply) -> bool:
        """MAIL and at least one RCPT were accepted: there is a message to send."""
        return mail_r.is_positive and any(r is not None and r.is_positive
                                          for r in self.rcpt_r)

    def _batch(self, replies: Sequence[Reply]) -> Step | None:
        mail_r, replies = self._take_envelope(replies)
        if self.chunking:  # nothing sent past the RCPTs yet: BDAT only if one was accepted
            if not self._accepted(mail_r):
                self.needs_rset = mail_r.is_positive
                return self._done(None)
            return self._send_body()
        data_r = replies[-1]
        self.data_r = data_r
        if data_r.code != 354:
            self.needs_rset = mail_r.is_positive
            return self._done(None)
        if not self._accepted(mail_r):
            # RFC 2920 3.1: DATA was accepted although nothing else was; end it empty and
            # let the transaction go, whatever the server then says.
            self._state = "end-empty"
            return Step(_END_EMPTY, 1, "end of data", data_timeout=True)
        self._state = "final"
        return Step(self._body, 1, "end of data", data_timeout=True)

    def _batch_bdat(self, replies: Sequence[Reply]) -> None:
        """MAIL, RCPT... and BDAT LAST went in one write; the last reply is BDAT's."""
        mail_r, replies = self._take_envelope(replies)
        final = replies[-1]
        if not final.is_positive:
            self.needs_rset = True  # RFC 3030 2: a refused BDAT is followed by RSET
        # With nothing accepted the BDAT refusal ("no valid recipients") is no outcome.
        return self._done(final if self._accepted(mail_r) else None)

    # --- lock-step --------------------------------------------------------------------
    def _send_mail(self) -> Step:
        self._state = "mail"
        return Step(self._mail, 1, "MAIL FROM")

    def _next_rcpt(self) -> Step | None:
        if self._i < len(self._rcpts):
            self._state = "rcpt"
            return Step(self._rcpts[self._i], 1, "RCPT TO")
        if not any(r is not None and r.is_positive for r in self.rcpt_r):
            self.needs_rset = True
            return self._done(None)
        if self.chunking:
            return self._send_body()
        self._state = "data"
        return Step(b"DATA\r\n", 1, "DATA")

    def _send_body(self) -> Step:
        """BDAT n LAST and the chunk: its reply is the transaction's final one."""
        self._state = "final"
        return Step(self._body, 1, "BDAT", data_timeout=True)

    def _rcpt(self, reply: Reply) -> Step | None:
        i = self._i
        self.rcpt_r[i] = reply
        self._i = i + 1
        if reply.is_too_many_recipients() or reply.code == 421:
            # The server takes no more in this transaction (RFC 5321 4.5.3.1.10), or is
            # closing (3.8): the rest get its answer; "too many" go again in the next one.
            for j in range(i + 1, len(self.rcpt_r)):
                self.rcpt_r[j] = reply
            self._i = len(self._rcpts)
        return self._next_rcpt()

    # --- the outcome ------------------------------------------------------------------
    def _done(self, final: Reply | None) -> None:
        self._state = "done"
        mail_r = self.mail_r
        assert mail_r is not None
        rcpt_r = tuple(self.rcpt_r)
        self.result = TransactionResult(self.chunk, mail_r, rcpt_r, self.data_r, final,
                                        outcomes(mail_r, rcpt_r, self.data_r, final))
        return None


def outcomes(mail_r: Reply, rcpt_r: Sequence[Reply | None], data_r: Reply | None,
             final: Reply | None) -> tuple[Reply, ...]:
    """Per-recipient outcomes: a refusal at MAIL applies to all, a refusal at RCPT to that
    recipient, and the reply to DATA (or after the dot) to every accepted recipient."""
    per: list[Reply] = []
    for r in rcpt_r:
        if not mail_r.is_positive:
            per.append(mail_r)
        elif r is None:
            per.append(connection_lost("no reply to RCPT"))
        elif not r.is_positive:
            per.append(r)
        elif data_r is not None and data_r.code != 354:  # None with BDAT: no DATA was sent
            per.append(data_r)
        elif final is not None:
            per.append(final)
        else:
            per.append(connection_lost("transaction not completed"))
    return tuple(per)


def retry_indexes(tr: TransactionResult) -> list[int]:
    """RFC 5321 4.5.3.1.10: recipients refused as "too many" go again in a new transaction,
    if this one delivered (else they keep the refusal: no progress, no loop)."""
    final = tr.final
    if final is None or final.code >= 400:
        return []
    return [i for i, r in zip(tr.indexes, tr.rcpt, strict=True)
            if r is not None and r.is_too_many_recipients()]
