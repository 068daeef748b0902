"""An in-memory IngressHandler for tests and the ingest benchmark: a list of messages."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from mta.queue.envelope import Envelope
from mta.rfc5321.reply import Reply
from mta.smtp.handler import SessionInfo


@dataclass
class MemoryHandler:
    """Accepts everything unless told otherwise; keeps (envelope, data) pairs.

    `mail_replies` / `rcpt_replies` map an address to the Reply policy would give;
    `delay` makes every decision really suspend (like a spool waiting for fsync).
    """

    messages: list[tuple[Envelope, bytes]] = field(default_factory=list)
    mail_replies: dict[str, Reply] = field(default_factory=dict)
    rcpt_replies: dict[str, Reply] = field(default_factory=dict)
    accept_reply: Reply | None = None
    delay: float = 0.0
    keep: bool = True  # False: count only (benchmarks)
    count: int = 0
    closed_sessions: int = 0
    sessions: list[SessionInfo] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    async def check_mail(self, session: SessionInfo, address: str,
                         params: dict[str, str]) -> Reply | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.keep:
            self.sessions.append(session)
        return self.mail_replies.get(address)

    async def check_rcpt(self, session: SessionInfo, address: str,
                         params: dict[str, str]) -> Reply | None:
        if self.delay:
            await asyncio.sleep(self.delay)
        return self.rcpt_replies.get(address)

    def session_closed(self, session: SessionInfo) -> None:
        self.closed_sessions += 1

    async def accept_message(self, session: SessionInfo, envelope: Envelope,
                             data: bytes) -> Reply:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.accept_reply is not None:
            return self.accept_reply
        self.count += 1
        if self.keep:
            self.messages.append((envelope, data))
        return Reply(250, "2.0.0", f"Ok: queued as {next(self._ids):08X}")
