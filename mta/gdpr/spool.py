"""An address in the spool: the messages it sent or is a recipient of, and the bodies that
name it (a To: header, a DSN about it).

Erasure, in one group commit of the spool's writer with `secure_delete` on:
- a message it sent: deleted, with its body and recipients;
- a message of which it is every recipient: deleted;
- a message with other recipients: its recipient rows go, and the address in the body
  (headers), the ENVID and the other recipients' last replies becomes the key's alias;
- any other body that names it (a DSN about it to its sender): the address becomes the
  alias.
Then `Spool.scrub()` (VACUUM, WAL truncated). The caller re-schedules what is left.
A DKIM signature over a header that named the address no longer verifies for a message
kept for its other recipients: the copy that leaves is no longer the one that was signed.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import aiosqlite

from mta.gdpr.match import Matcher
from mta.queue import PendingRecipient, Spool

__all__ = ["SpoolErasure", "erase_spool", "find_in_spool", "pending_of"]


@dataclass
class SpoolErasure:
    deleted: list[str] = field(default_factory=list)  # whole messages
    trimmed: list[str] = field(default_factory=list)  # recipients removed, others kept
    redacted: list[str] = field(default_factory=list)  # bodies rewritten
    recipients: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"messages_deleted": len(self.deleted), "messages_trimmed": len(self.trimmed),
                "bodies_redacted": len(self.redacted), "recipients_removed": self.recipients}


async def _ids(spool: Spool, m: Matcher) -> tuple[set[str], dict[str, list[int]], set[str]]:
    a = m.address
    sent = {r[0] for r in await spool.query(
        "SELECT id, mail_from FROM messages WHERE lower(mail_from) = ?", (a,))}
    rcpt: dict[str, list[int]] = defaultdict(list)
    for msg_id, idx, address, orcpt in await spool.query(
            "SELECT msg_id, idx, address, orcpt FROM recipients WHERE lower(address) = ? "
            "OR instr(lower(coalesce(orcpt, '')), ?) > 0", (a, a)):
        if m.same(address) or (orcpt and m.in_text(orcpt)):
            rcpt[msg_id].append(idx)
    # lower() folds ASCII only, as the address is matched; confirmed byte-wise below.
    named = {r[0] for r in await spool.query(
        "SELECT id FROM bodies WHERE instr(lower(CAST(body AS TEXT)), ?) > 0 UNION "
        "SELECT id FROM messages WHERE instr(lower(params), ?) > 0", (a, a))}
    return sent, dict(rcpt), named


async def find_in_spool(spool: Spool, m: Matcher) -> list[dict[str, Any]]:
    """Every message that holds the address, with how: sender, recipient, named (in the
    body or parameters)."""
    from mta.delivery.operations import message_json

    sent, rcpt, named = await _ids(spool, m)
    out = []
    for msg_id in sorted(sent | set(rcpt) | named):
        info = await spool.get(msg_id)
        if info is None:
            continue
        roles = [r for r, hit in (("sender", msg_id in sent), ("recipient", msg_id in rcpt),
                                  ("named", msg_id in named)) if hit]
        out.append({"roles": roles, "message": message_json(info)})
    return out


async def erase_spool(spool: Spool, m: Matcher, alias: str) -> SpoolErasure:
    result = SpoolErasure()

    async def fn(db: aiosqlite.Connection) -> None:
        await db.execute("PRAGMA secure_delete=ON")  # freed pages and cells are zeroed
        a = m.address
        sent = [r[0] for r in await db.execute_fetchall(
            "SELECT id FROM messages WHERE lower(mail_from) = ?", (a,))]
        rcpt: dict[str, list[int]] = defaultdict(list)
        for msg_id, idx, address, orcpt in await db.execute_fetchall(
                "SELECT msg_id, idx, address, orcpt FROM recipients WHERE lower(address) = ? "
                "OR instr(lower(coalesce(orcpt, '')), ?) > 0", (a, a)):
            if msg_id not in sent and (m.same(address) or (orcpt and m.in_text(orcpt))):
                rcpt[msg_id].append(idx)
        whole = list(sent)
        for msg_id, idxs in rcpt.items():
            rows = await db.execute_fetchall(
                "SELECT count(*) FROM recipients WHERE msg_id = ?", (msg_id,))
            if rows[0][0] <= len(idxs):
                whole.append(msg_id)
                continue
            marks = ",".join("?" * len(idxs))
            await db.execute(f"DELETE FROM recipients WHERE msg_id = ? AND idx IN ({marks})",
                             (msg_id, *idxs))
            await db.execute("UPDATE messages SET rcpt_count = rcpt_count - ? WHERE id = ?",
                             (len(idxs), msg_id))
            # Its other recipients may all be final already: the message is done then.
            await db.execute(
                "UPDATE messages SET state = 'done' WHERE id = ? AND state != 'done' AND NOT "
                "EXISTS (SELECT 1 FROM recipients r WHERE r.msg_id = messages.id AND "
                "r.state IN ('queued', 'held'))", (msg_id,))
            await db.execute("DELETE FROM bodies WHERE id = ? AND id IN (SELECT id FROM "
                             "messages WHERE id = ? AND state = 'done')", (msg_id, msg_id))
            result.trimmed.append(msg_id)
            result.recipients += len(idxs)
        for msg_id in whole:
            cur = await db.execute("DELETE FROM recipients WHERE msg_id = ?", (msg_id,))
            result.recipients += max(cur.rowcount, 0) if msg_id in rcpt else 0
            await db.execute("DELETE FROM bodies WHERE id = ?", (msg_id,))
            await db.execute("DELETE FROM messages WHERE id = ?", (msg_id,))
        result.deleted = whole
        # What is left that still names it: bodies, parameters, replies.
        for msg_id, body in await db.execute_fetchall(
                "SELECT id, body FROM bodies WHERE instr(lower(CAST(body AS TEXT)), ?) > 0",
                (a,)):
            new = await asyncio.to_thread(m.sub_bytes, bytes(body), alias)
            if new != body:
                await db.execute("UPDATE bodies SET body = ? WHERE id = ?", (new, msg_id))
                await db.execute("UPDATE messages SET size = ? WHERE id = ?",
                                 (len(new), msg_id))
                result.redacted.append(msg_id)
        for msg_id, params in await db.execute_fetchall(
                "SELECT id, params FROM messages WHERE instr(lower(params), ?) > 0", (a,)):
            await db.execute("UPDATE messages SET params = ? WHERE id = ?",
                             (m.sub_text(params, alias), msg_id))
        for msg_id, idx, reply in await db.execute_fetchall(
                "SELECT msg_id, idx, last_reply FROM recipients "
                "WHERE instr(lower(coalesce(last_reply, '')), ?) > 0", (a,)):
            await db.execute("UPDATE recipients SET last_reply = ? WHERE msg_id = ? AND "
                             "idx = ?", (m.sub_text(reply, alias), msg_id, idx))
        await db.execute("PRAGMA secure_delete=OFF")

    await spool.transact(fn)
    await spool.scrub()
    return result


async def pending_of(spool: Spool, msg_id: str) -> list[PendingRecipient]:
    """The queued recipients of one message, as recovery schedules them."""
    rows = await spool.query(
        "SELECT r.msg_id, r.idx, m.tenant, r.address, r.site, r.attempts, r.next_attempt, "
        "m.received_at, m.pool FROM recipients r JOIN messages m ON m.id = r.msg_id "
        "WHERE r.msg_id = ? AND r.state = 'queued' ORDER BY r.idx", (msg_id,))
    return [PendingRecipient(*r) for r in rows]
