"""RCPT TO for a tenant with nothing to count is answered at once by ingress, without a
task or a store round trip; a counted tenant's goes to the store (an awaitable)."""

from __future__ import annotations

import inspect

from mta.ingress import Ingress
from mta.observe import EventLog
from mta.queue import Spool
from mta.smtp.handler import SessionInfo


async def test_uncounted_recipients_are_answered_at_once_counted_ones_are_awaited(
        engine, tmp_path):
    spool = await Spool.open(tmp_path / "spool")
    try:
        ingress = Ingress(spool=spool, events=EventLog(None), policy=engine)
        for tenant, counted in (("news", False), ("acme", True)):  # acme: plan "small"
            session = SessionInfo(client_ip="127.0.0.1", client_port=1, helo="c",
                                  esmtp=True, tenant=tenant)
            assert await ingress.check_mail(session, "a@x.example", {}) is None
            answer = ingress.check_rcpt(session, "b@x.example", {})
            assert inspect.isawaitable(answer) is counted
            assert (await answer if counted else answer) is None
            # The same recipient again in the transaction: taken, not counted twice.
            assert ingress.check_rcpt(session, "B@x.example", {}) is None
            assert session.transaction.recipients == ["b@x.example"]
            ingress.session_closed(session)
    finally:
        await spool.close()
