"""Applying fates: what the dispatcher does once each recipient's fate is decided.

`Outcomes.finish` takes one attempt's replies, asks `fate.decide` for each queued
recipient, feeds the attempt's one shaping signal back, makes the outcomes durable
(`Spool.record`) before anything else, then reschedules the deferred, writes the events,
tells policy about final fates (`on_final`) and hands the DSNs owed to the `DsnSink`.
`bounce_now` is the administrative bounce (`mta queue bounce ID`).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from mta.bounce.classify import Classifier
from mta.bounce.dsn import RecipientStatus, make_dsn, notify_wants
from mta.config import Config
from mta.delivery.fate import Fate, RetryRules, attempt_signal, decide
from mta.delivery.sink import DsnSink, dsn_envelope
from mta.observe.events import EventLog
from mta.queue import MessageInfo, Outcome, RecipientInfo, Scheduler, Spool, WorkItem
from mta.rfc5321.reply import Reply
from mta.shaping import Shaper

if TYPE_CHECKING:
    from mta.delivery.paths import EgressPath

__all__ = ["FinalCallback", "Outcomes"]

log = logging.getLogger("mta.delivery")

# (tenant, queue id, recipient, outcome) once a recipient is delivered, bounced or expired.
FinalCallback = Callable[[str, str, str, str], Awaitable[None]]


class Outcomes:
    def __init__(self, cfg: Config, *, spool: Spool, events: EventLog, scheduler: Scheduler,
                 classifier: Classifier, shaper: Shaper, rules: RetryRules,
                 clock: Callable[[], float], poke: Callable[[], None],
                 on_final: FinalCallback | None = None) -> None:
        self.cfg = cfg
        self.spool = spool
        self.events = events
        self.scheduler = scheduler
        self.classifier = classifier
        self.shaper = shaper
        self.rules = rules
        self.clock = clock
        self.poke = poke
        self.on_final = on_final
        self.dsn_sink: DsnSink | None = None

    def expires_at(self, info: MessageInfo) -> float:
        """When the message's recipients expire: its class's max age (set by policy at
        acceptance), else [delivery] max_age."""
        return info.expires_at or info.received_at + self.cfg.delivery.max_age

    async def finish(self, item: WorkItem, replies: list[Reply], info: MessageInfo | None,
                     *, site: str, body: bytes | None = None,
                     path: EgressPath | None = None, feedback: bool = True,
                     remote_mta: str = "", remote_dsn: bool = False,
                     tls: dict[str, object] | None = None) -> None:
        """Decide each reply's fate, make the outcomes durable, then reschedule, notify,
        log and write the DSNs owed. `remote_mta`: the MX host that gave the replies
        ("" when no host answered), reported as the DSNs' Remote-MTA; `remote_dsn`: it
        offered the DSN extension, so NOTIFY and ORCPT went on with the message. `tls`:
        the session's TLS (tls version or "none", tls_cipher, tls_verified) for the events
        of recipients a host answered."""
        if info is None:
            info = await self.spool.get(item.msg_id)
            if info is None:
                return
        now = self.clock()
        expires = self.expires_at(info)
        rcpts = {r.index: r for r in info.recipients}
        decided: list[tuple[RecipientInfo, Fate]] = []
        for index, reply in zip(item.indexes, replies, strict=True):
            r = rcpts.get(index)
            if r is None or r.state != "queued":
                continue
            decided.append((r, decide(reply, attempt=r.attempts + 1, warned=r.warned,
                                      received_at=info.received_at, expires_at=expires,
                                      now=now, classifier=self.classifier,
                                      rules=self.rules, notify=r.notify)))
        if path is not None and feedback:
            signal = attempt_signal(f for _, f in decided)
            if signal is not None:
                self.shaper.record(path.config, *signal)
        if not decided:
            return
        failed = [(r, f) for r, f in decided if f.dsn == "failed"]
        delayed = [(r, f) for r, f in decided if f.dsn == "delayed"]
        # RFC 3461 4.1: NOTIFY=SUCCESS asks for a DSN once delivered (never by default).
        # Handed to a server that offers DSN, NOTIFY went on with the message and the
        # success DSN is that server's to send (5.2.1); to one that does not, we send
        # it, as "relayed" (5.2.2): no one further down will.
        success = [] if remote_dsn else [
            (r, f) for r, f in decided
            if f.kind == "delivered" and notify_wants(r.notify, "relayed")]
        if (failed or delayed or success) and body is None and info.mail_from:
            # The spool drops a body once its last recipient is final: read it for the
            # DSN before recording.
            with contextlib.suppress(KeyError):
                body = await self.spool.read_body(info.id)
        # Durable first: a crash after this line never resends a delivered recipient.
        await self.spool.record([Outcome(item.msg_id, r.index, f.kind, f.reply,
                                         next_attempt=f.next_attempt, site=site,
                                         warned=f.warned) for r, f in decided])
        retry_at: dict[float, list[int]] = defaultdict(list)
        for r, f in decided:
            if f.kind == "deferred":
                retry_at[f.next_attempt].append(r.index)
        for when, indexes in retry_at.items():
            self.scheduler.defer(WorkItem(item.msg_id, tuple(indexes), item.tenant, site,
                                          item.pool, item.parents), when)
        if retry_at:
            self.poke()
        emit = self.events.emit
        base = {"id": item.msg_id, "tenant": item.tenant, "site": site,
                "source": path.source.name if path is not None else None,
                "mx": remote_mta or None, **(tls or {})}
        # Deliveries and deferrals first, then bounces and expiries (the order of old).
        for r, f in sorted(decided, key=lambda rf: rf[1].final and rf[1].kind != "delivered"):
            emit(f.kind, **base, recipient=r.address, reply=str(f.reply),
                 category=f.category or None, attempt=r.attempts + 1)
        if self.on_final is not None:
            for r, f in decided:
                if f.final:
                    await self.on_final(item.tenant, item.msg_id, r.address, f.kind)
        mta = remote_mta or site
        if failed:
            await self.send_dsn(info, [(r, f.reply, f.kind) for r, f in failed], body, mta,
                                now=now)
        if delayed:
            await self.send_dsn(info, [(r, f.reply, "delayed") for r, f in delayed], body,
                                mta, now=now)
        if success:
            await self.send_dsn(info, [(r, f.reply, "relayed") for r, f in success],
                                body, mta, now=now)

    async def send_dsn(self, info: MessageInfo, failed: Iterable[tuple], body: bytes | None,
                       site: str, *, now: float | None = None) -> None:
        """RFC 3464 DSN to the envelope sender, through the same queue (never for <>).
        `failed` holds (recipient, reply, event) with event bounced, expired, delayed,
        delivered or relayed; `site` is the Remote-MTA (the MX host, else the site); `now`, the
        attempt's time, is each recipient's Last-Attempt-Date."""
        if not info.mail_from or self.dsn_sink is None:
            return
        until = self.expires_at(info)
        actions = {"delayed": "delayed", "delivered": "delivered", "relayed": "relayed"}
        statuses = [RecipientStatus.from_reply(
                        r.address, reply, action=actions.get(event, "failed"),
                        orcpt=r.orcpt, notify=r.notify, remote_mta=site,
                        expired=(event == "expired"), last_attempt=now,
                        will_retry_until=until if event == "delayed" else None)
                    for r, reply, event in failed]
        dsn = make_dsn(info, statuses, body,
                       reporting_mta=self.cfg.bounce.reporting_mta or self.cfg.server.hostname,
                       max_returned_size=self.cfg.bounce.max_returned_size, now=self.clock())
        if dsn is not None:
            await self.dsn_sink.submit(dsn_envelope(info, dsn), dsn)

    async def bounce_now(self, info: MessageInfo, reply: Reply) -> None:
        """Administrative bounce: every unfinished recipient bounces now, with a DSN."""
        open_rcpts = [r for r in info.recipients if r.state in ("queued", "held")]
        if not open_rcpts:
            return
        body = None
        if info.mail_from:
            with contextlib.suppress(KeyError):
                body = await self.spool.read_body(info.id)
        await self.spool.record([Outcome(info.id, r.index, "bounced", reply, attempted=False)
                                 for r in open_rcpts])
        for r in open_rcpts:
            self.events.emit("bounced", id=info.id, tenant=info.tenant, recipient=r.address,
                             reply=str(reply), category="administrative", site=r.site,
                             source=None, attempt=r.attempts)
            if self.on_final is not None:
                await self.on_final(info.tenant, info.id, r.address, "bounced")
        await self.send_dsn(info, [(r, reply, "bounced") for r in open_rcpts], body,
                            "(administrative)")
