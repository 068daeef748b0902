"""Policy engine fixtures: a manual clock, and every engine test run twice, on each store:
a real policy.db in a temporary directory, and a real redis-server (the session's, with a
key prefix of its own per test and state directory, so tests never see each other)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mta.config import Config, parse_config
from mta.observe import EventLog
from mta.policy import ManualClock, PolicyAdmin, PolicyEngine

PARIS = ZoneInfo("Europe/Paris")

BASE_TOML = """
[policy]
timezone = "Europe/Paris"
duplicate_window = "1d"

[plans.free]
unique_recipients_per_month = 2000

[plans.small]
messages_per_hour = 5
messages_per_day = 8
messages_per_month = 12

[tenants.acme]
plan = "small"

[tenants.shop]
prepaid = true

[tenants.news]
"""


def config(extra: str = "", base: str = BASE_TOML, tmp: Path | None = None) -> Config:
    return parse_config(base + extra, "test.toml", tmp or Path("/nonexistent"))


@pytest.fixture
def clock() -> ManualClock:
    # A Sunday morning in Paris, mid-month, well away from any DST change.
    return ManualClock(datetime(2026, 11, 22, 10, 30, tzinfo=PARIS))


@pytest.fixture
def events() -> EventLog:
    return EventLog(None, keep_recent=1000)


EngineFactory = Callable[..., Awaitable[PolicyEngine]]


@dataclass(frozen=True)
class Backend:
    """Which store the engines of a test use. Engines opened on the same state directory
    share state, on either store (the same policy.db, or the same Redis key prefix)."""

    name: str  # "sqlite" | "redis"
    redis_url: str = ""
    run: str = ""  # unique per test: the root of its Redis key prefixes

    def toml(self) -> str:
        """Config text that selects this store ([cluster] redis_url for Redis)."""
        return f'\n[cluster]\nredis_url = "{self.redis_url}"\n' if self.redis_url else ""

    def prefix(self, state: Path) -> str:
        return f"test:policy:{self.run}:{state.name}:"


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite")
    # Only Redis runs need the server: started once per session, on first use.
    return Backend("redis", request.getfixturevalue("redis_url"), uuid.uuid4().hex[:12])


@pytest.fixture
async def make_engine(tmp_path: Path, clock: ManualClock, events: EventLog,
                      backend: Backend) -> AsyncIterator[EngineFactory]:
    opened: list[PolicyEngine] = []

    async def make(extra: str = "", *, base: str = BASE_TOML, owner: str = "0",
                   state: Path | None = None) -> PolicyEngine:
        cfg = config(extra + backend.toml(), base, tmp_path)
        state = state or tmp_path / "state"
        eng = await PolicyEngine.open(cfg, state, clock=clock, events=events, owner=owner,
                                      redis_prefix=backend.prefix(state))
        opened.append(eng)
        return eng

    yield make
    for eng in opened:
        await eng.aclose()


@pytest.fixture
async def engine(make_engine: EngineFactory) -> PolicyEngine:
    return await make_engine()


@pytest.fixture
def admin(engine: PolicyEngine) -> PolicyAdmin:
    return PolicyAdmin(engine)


async def send(engine: PolicyEngine, tenant: str, rcpts: list[str], *, msg_id: str = "",
               cls: str | None = None) -> list[str]:
    """One whole transaction; returns the reply per recipient ("ok" or the reply text)."""
    txn = engine.transaction(tenant, "sender@example.com")
    r = await engine.check_mail(txn)
    if r is not None:
        return [str(r)] * len(rcpts)
    out = []
    for rcpt in rcpts:
        r = await engine.check_rcpt(txn, rcpt)
        out.append("ok" if r is None else str(r))
    if not txn.recipients:
        await engine.abort(txn)
        return out
    r = await engine.check_data(txn, cls)
    if r is not None:
        await engine.abort(txn)
        return [str(r) if o == "ok" else o for o in out]
    await engine.commit(txn, msg_id or f"q-{txn.id[:12]}")
    return out
