"""Fixtures: an SmtpServer on 127.0.0.1 port 0 with the in-memory handler, a test
certificate, users with cheap scrypt hashes, and an events log kept in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from mta.config import Config, ServerConfig, SmtpConfig, UserConfig
from mta.observe.events import EventLog
from mta.smtp.auth import hash_password
from mta.smtp.server import SmtpServer
from tests.smtp.memhandler import MemoryHandler
from tests.support.tls import write_self_signed

HOSTNAME = "mx.test"
PASSWORD = "correct horse"
# ln=4: a cheap hash, so tests do not spend 50 ms per AUTH; the format is the same.
_HASH = hash_password(PASSWORD, ln=4)


def make_config(**smtp: Any) -> Config:
    users = smtp.pop("users", {"alice": UserConfig(tenant="acme", password=_HASH)})
    base = SmtpConfig(listen=[("127.0.0.1", 0)], auth_failure_delay=0.0)
    return Config(server=ServerConfig(hostname=HOSTNAME),
                  smtp=dataclasses.replace(base, **smtp), users=users)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    write_self_signed(cert, key)
    return cert, key


@dataclasses.dataclass
class Running:
    server: SmtpServer
    handler: MemoryHandler
    events: EventLog
    host: str
    port: int

    def rejected(self, reason: str) -> list[dict[str, Any]]:
        return [e for e in self.events.recent
                if e["event"] == "rejected" and e["reason"] == reason]


StartServer = Callable[..., Awaitable[Running]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """`await start_server(max_recipients=2, ...)`: [smtp] keys as keyword arguments."""
    running: list[SmtpServer] = []

    async def start(handler: MemoryHandler | None = None, *, reuse_port: bool = False,
                    **smtp: Any) -> Running:
        handler = handler or MemoryHandler()
        events = EventLog(None, keep_recent=1000)
        server = SmtpServer(make_config(**smtp), handler, events=events, reuse_port=reuse_port)
        await server.start()
        running.append(server)
        host, port = server.addresses[0]
        return Running(server, handler, events, host, port)

    yield start
    for server in running:
        await server.stop(timeout=1.0)
