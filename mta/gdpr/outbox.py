"""An address in the webhook outbox: batches waiting (or failed) that carry its events.

A batch's body is the Standard Webhooks JSON (`data.events`). Erasure drops the events
whose `recipient` is the address and puts the key's alias in place of it in the others;
a batch left with no event goes. The webhook id stays (a receiver that got the old body
drops the new one as a repeat: what it received it already holds). Then VACUUM.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from mta.gdpr.match import Matcher
from mta.webhooks.outbox import Outbox

__all__ = ["erase_outbox", "find_in_outbox"]


def _named(db: sqlite3.Connection, m: Matcher) -> list[tuple[int, str, str, bytes, int]]:
    rows = db.execute("SELECT seq, endpoint, webhook_id, body, failed FROM batches WHERE "
                      "instr(lower(CAST(body AS TEXT)), ?) > 0", (m.address,)).fetchall()
    return [r for r in rows if m.in_bytes(bytes(r[3]))]


async def find_in_outbox(box: Outbox, m: Matcher) -> list[dict[str, Any]]:
    def run(db: sqlite3.Connection) -> list[dict[str, Any]]:
        out = []
        for _seq, endpoint, webhook_id, body, failed in _named(db, m):
            events = json.loads(body).get("data", {}).get("events", [])
            out.append({"endpoint": endpoint, "webhook_id": webhook_id,
                        "failed": bool(failed),
                        "events": [e for e in events
                                   if m.in_text(json.dumps(e, default=str))]})
        return out
    return list(await box.transact(run))


async def erase_outbox(box: Outbox, m: Matcher, alias: str) -> dict[str, int]:
    def run(db: sqlite3.Connection) -> dict[str, int]:
        db.execute("PRAGMA secure_delete=ON")
        deleted = rewritten = 0
        for seq, _endpoint, _wid, body, _failed in _named(db, m):
            doc = json.loads(body)
            events = doc.get("data", {}).get("events", [])
            left = [json.loads(m.sub_text(json.dumps(e, default=str), alias))
                    for e in events if not m.same(e.get("recipient"))]
            if not left:
                db.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                deleted += 1
                continue
            doc["data"]["events"] = left
            new = m.sub_text(json.dumps(doc, separators=(",", ":"), default=str), alias)
            db.execute("UPDATE batches SET body = ?, events = ? WHERE seq = ?",
                       (new.encode(), len(left), seq))
            rewritten += 1
        # Errors of a receiver that echoed the address back.
        db.execute("UPDATE batches SET last_error = '' WHERE instr(lower(last_error), ?) > 0",
                   (m.address,))
        db.execute("PRAGMA secure_delete=OFF")
        return {"batches_deleted": deleted, "batches_rewritten": rewritten}
    result: dict[str, int] = await box.transact(run)
    await box.scrub()
    return result
