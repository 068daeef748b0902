"""MAIL FROM is answered at once by ingress, without a task, once the tenant's chain and
the store's tenants and suspensions are cached (every message but one a second asks the
same), whether the tenant is configured, the relay networks' "default" or made at run
time; a suspension made meanwhile is still seen by the very next MAIL."""

from __future__ import annotations

import inspect

import pytest

from mta.ingress import Ingress
from mta.observe import EventLog
from mta.policy import PolicyAdmin, PolicyEngine
from mta.policy.tenants import Tenant
from mta.queue import Spool
from mta.smtp.handler import SessionInfo


async def _answer(value: object) -> object:
    return await value if inspect.isawaitable(value) else value


# news: configured; default: the relay networks' (not configured); sub: created at run
# time under news (in the store).
@pytest.mark.parametrize("tenant", ["news", "default", "sub"])
async def test_mail_from_is_answered_at_once_once_cached_and_sees_a_new_suspension(
        engine: PolicyEngine, tmp_path, tenant: str):
    spool = await Spool.open(tmp_path / "spool")
    try:
        if tenant == "sub":
            await PolicyAdmin(engine).create_tenant(Tenant("sub", parent="news"))
        ingress = Ingress(spool=spool, events=EventLog(None), policy=engine)
        session = SessionInfo(client_ip="127.0.0.1", client_port=1, helo="c", esmtp=True,
                              tenant=tenant)
        assert await _answer(ingress.check_mail(session, "a@x.example", {})) is None
        first = session.transaction
        # RSET: the next MAIL gives back the unreserved transaction without awaiting.
        answer = ingress.check_mail(session, "a@x.example", {})
        assert not inspect.isawaitable(answer)
        assert answer is None
        assert first.state == "aborted"
        assert session.transaction is not first and session.transaction.state == "open"
        await PolicyAdmin(engine).suspend(tenant, "spam complaints")
        refusal = await _answer(ingress.check_mail(session, "a@x.example", {}))
        assert refusal is not None and refusal.code == 554
        assert "spam complaints" in str(refusal)
        assert session.transaction is None
    finally:
        await spool.close()
