"""RCPT TO for a tenant with nothing to count is answered at once by ingress, without a
task or a store round trip. A counted tenant's is answered at once too by the embedded
store, which decides in memory; Redis is a network round trip (an awaitable)."""

from __future__ import annotations

import inspect

from mta.ingress import Ingress
from mta.observe import EventLog
from mta.queue import Spool
from mta.smtp.handler import SessionInfo

from .conftest import Backend


async def test_uncounted_recipients_are_answered_at_once_counted_ones_are_awaited(
        engine, tmp_path, backend: Backend):
    spool = await Spool.open(tmp_path / "spool")
    try:
        ingress = Ingress(spool=spool, events=EventLog(None), policy=engine)
        for tenant, counted in (("news", False), ("acme", True)):  # acme: plan "small"
            session = SessionInfo(client_ip="127.0.0.1", client_port=1, helo="c",
                                  esmtp=True, tenant=tenant)
            assert await ingress.check_mail(session, "a@x.example", {}) is None
            answer = ingress.check_rcpt(session, "b@x.example", {})
            awaited = counted and backend.name == "redis"
            assert inspect.isawaitable(answer) is awaited
            assert (await answer if awaited else answer) is None
            assert session.transaction.reserved is counted
            # The same recipient again in the transaction: taken, not counted twice.
            assert ingress.check_rcpt(session, "B@x.example", {}) is None
            assert session.transaction.recipients == ["b@x.example"]
            ingress.session_closed(session)
    finally:
        await spool.close()
