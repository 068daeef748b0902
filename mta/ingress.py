"""The ingest service: the one accept path of SMTP, HTTP injection and our own DSNs.

Every message, whichever door it came in by, ends in `submit(envelope, body, txn=...,
origin=...)`, which returns its queue id once it is durable (or raises `NotQueued` with the
reply that says why not). The doors ask policy their per-stage questions first, through the
same two functions: `check_mail` and `check_rcpt` take a `Client` (an SMTP session's
`SessionInfo`, or the HTTP request's own small object) and keep the policy transaction on
it. `Ingress` is also the SMTP server's handler (mta.smtp.handler.IngressHandler):
`accept_message` is `submit` answered as an SMTP reply.

One transaction, in order (Postfix smtpd_check style: each stage answers a Reply or None):
  MAIL      policy.check_mail     may this tenant send now (suspension, licence, windows)
  RCPT      policy.check_rcpt     reserve quota, licence volume and one credit
  submit    policy.check_data     message class allowed; duplicates dropped (still 250)
            content               rules and scanner (mta.content): refuse, hold or tag
            DKIM                  signature added (in a thread: RSA runs without the GIL)
            spool.put             returns after the group commit holding it is fsynced
            policy.prepare(id)    the reservations are durable too (their fsync ran meanwhile)
            policy.commit(id)     reservations become charges
  then the queue id (`250 2.0.0 Ok: queued as <id>` over SMTP). Any refusal aborts the policy
transaction, so a refused recipient is never charged; a crash between the 250 and commit is
settled by `PolicyEngine.reconcile` at the next start (the transaction id is the queue id).
Each accepted recipient is one `received` event, with the door it came by (`protocol`).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from mta.bounce.feedback import Feedback
from mta.bounce.inbound import Inbound
from mta.bounce.stamp import Unstampable, stamp
from mta.content import ContentFilter
from mta.dkim.signer import DkimSigner, sign_async
from mta.observe.events import EventLog
from mta.policy.engine import PolicyEngine, PolicyTxn
from mta.policy.identity import SenderIdentity
from mta.queue.envelope import Envelope
from mta.queue.records import SpoolError
from mta.queue.spool import Spool
from mta.rfc5321.reply import Reply
from mta.suppress import Suppressions

__all__ = ["Client", "Ingress", "NotQueued", "Origin", "queued_reply"]

log = logging.getLogger("mta.ingress")

# The door a message came in by: the `protocol` of its events and of the ingest histogram.
Origin = Literal["smtp", "http", "dsn"]

# Called with (queue id, envelope) once a message is durable: the delivery side picks it up.
AcceptedCallback = Callable[[str, Envelope], None]

R_DUPLICATE = Reply(250, "2.0.0", "Ok: duplicate of a message already accepted, not sent again")
R_SUPPRESSED = Reply(250, "2.0.0", "Ok: every recipient is suppressed, nothing sent")
R_SIGNING = Reply(554, "5.6.0", "Message header block cannot be parsed for signing")


def queued_reply(msg_id: str) -> Reply:
    return Reply(250, "2.0.0", f"Ok: queued as {msg_id}")


class NotQueued(Exception):
    """`submit` did not queue the message. `reply` is what SMTP answers: a 4xx/5xx refusal,
    or a 250 when every recipient was a duplicate (accepted, and dropped)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


class Client(Protocol):
    """Who opens a mail transaction: an SMTP session (mta.smtp.SessionInfo) or an HTTP
    request (mta.http.inject). The stage checks read `tenant` and keep the open policy
    transaction in `transaction`, from MAIL to `submit`."""

    tenant: str | None
    transaction: PolicyTxn | None


class Ingress:
    def __init__(self, *, spool: Spool, events: EventLog,
                 on_accepted: AcceptedCallback | None = None,
                 signer: DkimSigner | None = None, policy: PolicyEngine | None = None,
                 observe_ingest: Callable[[float, str], None] | None = None,
                 observe_dkim: Callable[[float, str], None] | None = None,
                 content: ContentFilter | None = None,
                 suppressions: Suppressions | None = None) -> None:
        self.spool = spool
        self.content = content  # [content] rules and scanner (mta.content)
        self.suppressions = suppressions
        self.events = events
        self.on_accepted = on_accepted
        self.signer = signer
        self.policy = policy
        self.observe_ingest = observe_ingest
        self.observe_dkim = observe_dkim
        self._class_re: re.Pattern[bytes] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        # Sending domains and forged trace (mta/policy/identity.py); set by the daemon.
        self.identity: SenderIdentity | None = None
        # The feedback loop (mta/bounce): trace and unsubscribe headers before signing, and
        # mail for the bounce domains answered by `inbound` instead of queued; by the daemon.
        self.feedback: Feedback | None = None
        self.inbound: Inbound | None = None
        self.reload(signer)

    def reload(self, signer: DkimSigner | None) -> None:
        """A new config (SIGHUP): the new signer, and the class header of the policy
        engine's config (reload the engine first)."""
        self.signer = signer
        if self.policy is not None:
            name = re.escape(self.policy.cfg.policy.class_header.encode())
            # The class header is an instruction to us, not part of the message: it is read
            # and removed (with its folded continuation lines) before signing.
            self._class_re = re.compile(rb"(?im)^" + name + rb"[ \t]*:[ \t]*(.*)\r?\n"
                                        rb"(?:[ \t].*\r?\n)*")

    # --- per-stage policy questions: None means go on --------------------------------------

    def check_mail(self, client: Client, address: str,
                   params: dict[str, str]) -> Reply | Awaitable[Reply | None] | None:
        """Answered at once, without a task, when nothing needs awaiting: no reservation
        of an earlier transaction to give back, and identity and policy decide on what
        they have cached (the usual case); else an awaitable."""
        policy = self.policy
        if policy is None:
            return None
        if client.transaction is not None:  # RSET or a refused DATA left one open
            if not policy.abort_now(client.transaction):
                return self._after_abort(client, address, params)
            client.transaction = None
        if self.identity is not None:
            refusal = self.identity.answer_mail(client.tenant or "default", address)
            if refusal is not None:
                return refusal
        return self._open_transaction(client, address)

    async def _after_abort(self, client: Client, address: str,
                           params: dict[str, str]) -> Reply | None:
        """check_mail once the earlier transaction's reservations are given back."""
        assert self.policy is not None and client.transaction is not None
        await self.policy.abort(client.transaction)
        client.transaction = None
        answer = self.check_mail(client, address, params)
        return await answer if inspect.isawaitable(answer) else answer

    def _open_transaction(self, client: Client, address: str
                          ) -> Reply | Awaitable[Reply | None] | None:
        assert self.policy is not None
        # The transaction is named by the queue id the message will get, so a crash after
        # the spool write is reconciled without a separate "prepare" write.
        txn = self.policy.transaction(client.tenant or "default", address,
                                      self.spool.new_id())
        client.transaction = txn
        answer = self.policy.answer_mail(txn)
        if inspect.isawaitable(answer):
            return self._opened(client, answer)
        if answer is not None:
            client.transaction = None
        return answer

    @staticmethod
    async def _opened(client: Client, answer: Awaitable[Reply | None]) -> Reply | None:
        reply = await answer
        if reply is not None:
            client.transaction = None
        return reply

    def check_rcpt(self, client: Client, address: str,
                   params: dict[str, str]) -> Reply | Awaitable[Reply | None] | None:
        if self.policy is None or client.transaction is None:
            return None
        txn, policy = client.transaction, self.policy
        if self.suppressions is not None:  # a suppressed recipient is never charged
            return self.suppressions.screen_rcpt(
                txn, address, lambda: policy.answer_rcpt(txn, address))
        return policy.answer_rcpt(txn, address)

    def session_closed(self, client: Client) -> None:
        """The client is gone (connection lost, HTTP request over) with a transaction still
        open: what policy reserved for it is given back."""
        txn, client.transaction = client.transaction, None
        if txn is not None and self.policy is not None:
            # Fire and forget: the connection is gone, nobody waits for the release.
            self._background(self.policy.abort(txn))

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- the accept path ---------------------------------------------------------------------

    async def accept_message(self, session: Client, envelope: Envelope,
                             data: bytes) -> Reply:
        """End of DATA over SMTP: `submit`, answered as the SMTP reply."""
        started = time.perf_counter()
        txn, session.transaction = session.transaction, None
        if self.inbound is not None and self.inbound.claims(envelope):
            if txn is not None and self.policy is not None:
                await self.policy.abort(txn)
            return await self.inbound.receive(envelope, data)
        try:
            msg_id = await self.submit(envelope, data, txn=txn, origin="smtp")
        except NotQueued as e:
            return e.reply
        if self.observe_ingest is not None:
            self.observe_ingest(time.perf_counter() - started, "smtp")
        return queued_reply(msg_id)

    async def submit_dsn(self, envelope: Envelope, body: bytes) -> str:
        """Queue a DSN we generated (null sender, no policy: DSNs are not the tenant's
        sending); the queue id, or NotQueued."""
        started = time.perf_counter()
        msg_id = await self.submit(envelope, body, origin="dsn")
        if self.observe_ingest is not None:
            self.observe_ingest(time.perf_counter() - started, "dsn")
        return msg_id

    async def submit(self, envelope: Envelope, body: bytes, *, txn: PolicyTxn | None = None,
                     origin: Origin = "smtp") -> str:
        """Queue one message: policy's end-of-DATA checks on `txn` (the transaction the
        door's check_mail/check_rcpt opened; None: no policy), DKIM, the spool. Returns the
        queue id once the message and its policy charges are durable; raises NotQueued
        otherwise. `txn` is committed or aborted here, whatever happens."""
        if not envelope.received_at:
            envelope.received_at = time.time()
        data = body
        try:
            if txn is not None and self.suppressions is not None:
                # [suppression] action = "drop": answered 250 at RCPT, not queued.
                envelope.recipients = self.suppressions.keep(txn, envelope.recipients)
                if not envelope.recipients:
                    raise NotQueued(R_SUPPRESSED)
            if txn is not None:
                assert self.policy is not None
                refusal, data = await self._policy_data(txn, envelope, data)
                if refusal is not None:
                    raise NotQueued(refusal)
            msg_id = txn.id if txn is not None else self.spool.new_id()
            if self.identity is not None and origin != "dsn":
                if txn is not None:
                    refusal = self.identity.check_header_from(envelope.tenant, data)
                    if refusal is not None:
                        raise NotQueued(refusal)
                data = self.identity.strip_trace(data, msg_id=msg_id, tenant=envelope.tenant)
            held = None  # content rules: reject, hold or tag; before signing (tag signed)
            if self.content is not None and self.content.active and origin != "dsn":
                verdict = await self.content.check(envelope, data, msg_id=msg_id,
                                                   origin=origin)
                if verdict.reply is not None:
                    raise NotQueued(verdict.reply)
                data, held = verdict.apply(data), verdict.hold_reply
            if self.feedback is not None and origin != "dsn":  # before signing: signed
                try:
                    data = stamp(self.feedback, data, msg_id=msg_id, tenant=envelope.tenant,
                                 msg_class=envelope.msg_class,
                                 recipients=[r.address for r in envelope.recipients])
                except Unstampable as e:
                    raise NotQueued(e.reply) from None
            if self.signer is not None:
                signing = time.perf_counter()
                try:
                    signed = await sign_async(self.signer, data, envelope.received_at)
                except Exception as e:  # DkimSignError: a header block we can't parse
                    log.info("not signing a message from %s: %s", envelope.client_ip, e)
                    raise NotQueued(R_SIGNING) from None
                if signed is not data and self.observe_dkim is not None:
                    self.observe_dkim(time.perf_counter() - signing, "dkim")
                data = signed
            if txn is not None:
                # Its reservations' COMMIT starts now and runs beside the spool's fsync.
                self.policy.sync_soon(txn)  # type: ignore[union-attr]
            try:
                await self.spool.put(envelope, data, msg_id, held=held)
            except SpoolError as e:
                log.warning("spool refused a message from %s: %s", envelope.client_ip, e)
                self.events.emit("rejected", tenant=envelope.tenant,
                                 client_ip=envelope.client_ip, reason="spool",
                                 reply=str(e.reply), protocol=origin)
                raise NotQueued(e.reply) from None
            if txn is not None:
                # The reservations' COMMIT ran meanwhile, so this rarely waits.
                refusal = await self.policy.prepare(txn, msg_id)  # type: ignore[union-attr]
                if refusal is not None:
                    # On disk but not durably charged: it must not be sent, nor get a 250.
                    if not await self.spool.delete(msg_id):
                        log.error("policy refused %s after its spool write; not deleted",
                                  msg_id)
                    raise NotQueued(refusal)
                await self.policy.commit(txn, msg_id)  # type: ignore[union-attr]
                txn = None
        finally:
            if txn is not None:  # refused: give back every reservation
                await self.policy.abort(txn)  # type: ignore[union-attr]
        emit = self.events.emit
        # The client's own references (its Message-ID, its RFC 3461 ENVID) beside our id:
        # what a platform's webhook receiver joins on.
        head_end = data.find(b"\r\n\r\n")
        message_id = _header_value(data[:head_end + 2] if head_end >= 0 else data,
                                   b"message-id")
        envid = envelope.mail_params.get("ENVID") if envelope.mail_params else None
        for r in envelope.recipients:
            emit("received", id=msg_id, tenant=envelope.tenant, sender=envelope.mail_from,
                 recipient=r.address, size=len(data), client=envelope.client_ip,
                 protocol=origin, message_id=message_id, envid=envid)
        if self.on_accepted is not None and held is None:  # held: `mta queue release`
            self.on_accepted(msg_id, envelope)
        return msg_id

    async def _policy_data(self, txn: PolicyTxn, envelope: Envelope,
                           data: bytes) -> tuple[Reply | None, bytes]:
        """Message class and duplicates; returns (refusal or None, data without the class
        header). Drops duplicate recipients from the envelope (policy writes their event);
        a NotQueued 250 when none is left."""
        policy = self.policy
        assert policy is not None and self._class_re is not None
        head_end = data.find(b"\r\n\r\n")
        head = data[: head_end + 2] if head_end >= 0 else data
        m = self._class_re.search(head)
        class_value = m.group(1).decode("ascii", "replace").strip() if m else None
        refusal = await policy.check_data(txn, class_value)
        if refusal is not None:
            return refusal, data
        envelope.msg_class = txn.msg_class or ""
        envelope.pool = txn.pool or "default"  # routing, decided once (mta.delivery.paths)
        envelope.parents = tuple(t.name for t in txn.chain[1:])
        if txn.max_age:
            envelope.expires_at = envelope.received_at + txn.max_age
        if m is not None:
            data = data[: m.start()] + data[m.end():]
            head = head[: m.start()] + head[m.end():]
        if policy.cfg.policy.duplicate_window <= 0:
            return None, data  # duplicate suppression is off: no header to look for
        message_id = _header_value(head, b"message-id")
        if message_id:
            keep = [r for r in envelope.recipients
                    if not await policy.is_duplicate(txn, message_id, r.address)]
            if not keep:
                return R_DUPLICATE, data
            envelope.recipients = keep
        return None, data


@functools.lru_cache(maxsize=16)
def _header_re(name: bytes) -> re.Pattern[bytes]:
    # Compiled once per name: building and looking up the pattern cost more than the
    # search (twice per message).
    return re.compile(rb"(?im)^" + re.escape(name) + rb"[ \t]*:[ \t]*(.*(?:\r?\n[ \t].*)*)")


def _header_value(head: bytes, name: bytes) -> str | None:
    """The value of the first `name:` header in a header block (unfolded), or None."""
    m = _header_re(name).search(head)
    if m is None:
        return None
    return b" ".join(m.group(1).split()).decode("utf-8", "replace") or None
