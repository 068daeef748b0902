"""MAIL FROM is answered at once by ingress, without a task, once the tenant's chain and
the store's suspensions are cached (every message but one a second asks the same); a
suspension made meanwhile is still seen by the very next MAIL."""

from __future__ import annotations

import inspect

from mta.ingress import Ingress
from mta.observe import EventLog
from mta.policy import PolicyAdmin, PolicyEngine
from mta.queue import Spool
from mta.smtp.handler import SessionInfo


async def _answer(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


async def test_mail_from_is_answered_at_once_once_cached_and_sees_a_new_suspension(
        engine: PolicyEngine, tmp_path):
    spool = await Spool.open(tmp_path / "spool")
    try:
        ingress = Ingress(spool=spool, events=EventLog(None), policy=engine)
        session = SessionInfo(client_ip="127.0.0.1", client_port=1, helo="c", esmtp=True,
                              tenant="news")
        assert await _answer(ingress.check_mail(session, "a@x.example", {})) is None
        first = session.transaction
        # RSET: the next MAIL gives back the unreserved transaction without awaiting.
        answer = ingress.check_mail(session, "a@x.example", {})
        assert not inspect.isawaitable(answer)
        assert answer is None
        assert first.state == "aborted"
        assert session.transaction is not first and session.transaction.state == "open"
        await PolicyAdmin(engine).suspend("news", "spam complaints")
        refusal = await _answer(ingress.check_mail(session, "a@x.example", {}))
        assert refusal is not None and refusal.code == 554
        assert "spam complaints" in str(refusal)
        assert session.transaction is None
    finally:
        await spool.close()
