"""Fixtures: a real redis-server on a free loopback port, and the shaping stores
parametrized over both backends (in memory and Redis) so one test checks both."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from mta.shaping.shaper import Stores, memory_stores

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """One redis-server for the session, no persistence, killed at the end."""
    for _ in range(3):  # the free port can be taken between probe and bind: retry
        port = _free_port()
        proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None and not _ping(port):
            time.sleep(0.02)
        if proc.poll() is None and _ping(port):
            break
        proc.kill()
        proc.wait(timeout=5)
    else:
        pytest.fail("could not start redis-server")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(params=["memory", "redis"])
async def stores(request: pytest.FixtureRequest) -> AsyncIterator[Stores]:
    if request.param == "memory":
        yield memory_stores()
        return
    from mta.shaping.shaper import redis_stores

    url = request.getfixturevalue("redis_url")
    # A fresh key prefix per test: tests never see each other's counters.
    st = await redis_stores(url, prefix=f"test:{uuid.uuid4().hex}:")
    try:
        yield st
    finally:
        await st.aclose()
