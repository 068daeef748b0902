"""The accept path shared by SMTP and HTTP ingress: policy, DKIM, spool, scheduler.

`Ingress` implements the SMTP server's handler protocol (mta.smtp.handler.IngressHandler)
and the HTTP injection path calls the same methods, so both get the same policy, the same
signature and the same durability: `accept_message` answers `250` only after the spool's
group commit that holds the message is fsynced.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mta.bounce.dsn import dsn_is_8bit
from mta.observe.events import EventLog
from mta.queue.envelope import Envelope, Recipient
from mta.queue.records import SpoolError
from mta.queue.spool import Spool
from mta.rfc5321.reply import Reply

__all__ = ["Ingress"]

log = logging.getLogger("mta.ingress")

# Called with (queue id, envelope) once a message is durable: the delivery side picks it up.
AcceptedCallback = Callable[[str, Envelope], None]


class Ingress:
    def __init__(self, *, spool: Spool, events: EventLog,
                 on_accepted: AcceptedCallback | None = None,
                 signer: object | None = None) -> None:
        self.spool = spool
        self.events = events
        self.on_accepted = on_accepted
        self.signer = signer

    # Per-stage policy questions; "None" means go on. The policy engine plugs in here.
    def check_mail(self, session: object, address: str,
                   params: dict[str, str]) -> Reply | None:
        return None

    def check_rcpt(self, session: object, address: str,
                   params: dict[str, str]) -> Reply | None:
        return None

    async def accept_message(self, envelope: Envelope, data: bytes) -> Reply:
        if not envelope.received_at:
            envelope.received_at = time.time()
        if self.signer is not None:
            data = self.signer.sign(data, envelope.received_at)  # type: ignore[attr-defined]
        try:
            msg_id = await self.spool.put(envelope, data)
        except SpoolError as e:
            log.warning("spool refused a message from %s: %s", envelope.client_ip, e)
            self.events.emit("rejected", tenant=envelope.tenant, client=envelope.client_ip,
                             reason="spool", reply=str(e.reply))
            return e.reply
        emit = self.events.emit
        for r in envelope.recipients:
            emit("received", id=msg_id, tenant=envelope.tenant, sender=envelope.mail_from,
                 recipient=r.address, size=len(data), client=envelope.client_ip)
        if self.on_accepted is not None:
            self.on_accepted(msg_id, envelope)
        return Reply(250, "2.0.0", f"Ok: queued as {msg_id}")

    async def inject_dsn(self, tenant: str, recipient: str, data: bytes) -> None:
        """Queue a DSN we generated: null sender, to the original envelope sender. It
        travels through the same spool and delivery as any message (and is never bounced
        again: a failed DSN has the null sender)."""
        params = {"BODY": "8BITMIME"} if dsn_is_8bit(data) else {}
        envelope = Envelope(tenant=tenant, mail_from="", recipients=[Recipient(recipient)],
                            client_ip="127.0.0.1", helo="localhost", mail_params=params)
        reply = await self.accept_message(envelope, data)
        if not reply.is_positive:
            log.error("could not queue a DSN to %s: %s", recipient, reply)
