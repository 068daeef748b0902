"""RSA signing in [signing] worker processes (mta.dkim.pool): the same bytes as signing in
this process, and a worker killed with SIGKILL, or one that cannot start, costs no message
and no signature."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from mta.dkim import DkimSigner, DkimSignError, sign_async
from mta.dkim.pool import attach_pool
from tests.dkim.helpers import MESSAGE, Keys, rsa_cfg

NOW = float(int(time.time()) - 60)


def _signer(keys: Keys, key: Path | None = None, workers: int = 2) -> DkimSigner:
    cfg = {"example.com": rsa_cfg(keys, **({"key": key} if key else {}))}
    s = DkimSigner.from_config(cfg, hostname="mta.example.net")
    attach_pool(s, cfg, hostname="mta.example.net", file="t.toml", workers=workers)
    assert s.pool is not None
    return s


def _messages(n: int) -> list[bytes]:
    return [MESSAGE.replace(b"<lunch.1@", f"<lunch.{i}@".encode()) for i in range(n)]


async def test_pool_signs_the_same_bytes_as_this_process(keys: Keys) -> None:
    s = _signer(keys)
    try:
        msgs = _messages(40)
        signed = await asyncio.wait_for(
            asyncio.gather(*(sign_async(s, m, NOW) for m in msgs)), 60)
        assert signed == [s.sign(m, NOW) for m in msgs]
        assert len(s.pool.pids()) == 2
    finally:
        await s.pool.aclose()


async def test_kill_9_of_a_worker_with_messages_in_flight_loses_nothing(
        keys: Keys) -> None:
    s = _signer(keys)
    try:
        msgs = _messages(400)
        tasks = [asyncio.ensure_future(sign_async(s, m, NOW)) for m in msgs]
        async with asyncio.timeout(60):  # both workers up and busy
            while len(s.pool.pids()) < 2 or not s.pool._pool.workers()[0].pending:
                await asyncio.sleep(0.005)
        victim = s.pool._pool.workers()[0]
        assert victim.pending  # messages in flight in the worker killed
        os.kill(victim.pid, signal.SIGKILL)
        signed = await asyncio.wait_for(asyncio.gather(*tasks), 120)
        assert signed == [s.sign(m, NOW) for m in msgs]  # every one, signed, unchanged
        assert s.pool.restarts == 1
        assert victim.pid not in s.pool.pids()
    finally:
        await s.pool.aclose()


async def test_workers_that_cannot_start_leave_signing_to_this_process(
        keys: Keys, tmp_path: Path) -> None:
    # The key file is gone by the time the workers read it (this process loaded it
    # before): they exit at start-up, twice, and the message is signed here.
    key = tmp_path / "k.key"
    shutil.copy(keys.path["rsa1"], key)
    cfg = {"example.com": rsa_cfg(keys, key=key)}
    s = DkimSigner.from_config(cfg, hostname="mta.example.net")
    key.unlink()
    attach_pool(s, cfg, hostname="mta.example.net", file="t.toml", workers=1)
    try:
        signed = await asyncio.wait_for(sign_async(s, MESSAGE, NOW), 60)
        assert signed == s.sign(MESSAGE, NOW)
    finally:
        await s.pool.aclose()


async def test_unparsable_header_block_raises_through_the_pool(keys: Keys) -> None:
    s = _signer(keys, workers=1)
    try:
        bad = MESSAGE.replace(b"Subject: Lunch", b"Sub ject: Lunch")
        with pytest.raises(DkimSignError):
            await asyncio.wait_for(sign_async(s, bad, NOW), 60)
        # and the worker serves on
        assert await asyncio.wait_for(sign_async(s, MESSAGE, NOW), 60) == s.sign(MESSAGE, NOW)
        assert s.pool.restarts == 0
    finally:
        await s.pool.aclose()
