"""Crash safety: SIGKILL a process in the middle of a put storm, several times, and check
that every id it was given (the 250 it would have sent) survived, whole.

DESIGN.md invariant: "250 after DATA means the message is on disk and fsynced."
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import sys
from pathlib import Path

import pytest

from mta.queue.spool import Spool

CHILD = Path(__file__).with_name("crash_child.py")
ROUNDS = 4
REPO = Path(__file__).resolve().parents[2]


async def run_and_kill(spool_dir: Path, kill_after: int) -> list[str]:
    """Start the child, read ids until `kill_after` of them arrived, SIGKILL it mid-load,
    and return every complete id line it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), str(spool_dir), "50",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    acked: list[str] = []
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line == b"ready\n", (line, await proc.stderr.read() if proc.stderr else b"")
        while len(acked) < kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
            assert line, "child died on its own"
            acked.append(line.decode().strip())
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)  # no cleanup, no close(): a crash
        rest = await asyncio.wait_for(proc.stdout.read(), timeout=30) if proc.stdout else b""
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == -signal.SIGKILL
    # Ids printed between our last read and the kill count too; a torn last line does not.
    for line in rest.decode().split("\n")[:-1]:
        acked.append(line.strip())
    return acked


@pytest.mark.slow
async def test_every_acknowledged_message_survives_sigkill_whole(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    rng = random.Random(5321)
    acked: list[str] = []
    for _ in range(ROUNDS):
        acked += await run_and_kill(spool_dir, kill_after=rng.randint(150, 600))
        assert all(re.fullmatch(r"[0-9a-f]{18}", i) for i in acked)

        async with await Spool.open(spool_dir) as spool:
            for msg_id in acked:
                info = await spool.get(msg_id)
                assert info is not None, f"acknowledged {msg_id} lost"
            # No torn message: whatever is in the spool (acknowledged or not) is whole.
            total = 0
            after = None
            while page := await spool.list(limit=500, after=after):
                for info in page:
                    body = await spool.read_body(info.id)
                    k = int(re.match(rb"X-Rcpts: (\d+)", body).group(1))
                    assert len(info.recipients) == k and info.size == len(body)
                    assert [r.index for r in info.recipients] == list(range(k))
                    total += k
                after = page[-1].id

            # Recovery streams every pending recipient, in bounded batches.
            streamed = 0
            async for rows in spool.iter_pending(batch=200):
                assert len(rows) <= 200
                streamed += len(rows)
            assert streamed == total
    assert len(set(acked)) == len(acked)  # ids never repeat across restarts
