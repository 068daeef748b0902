"""RSA signing in the [signing] worker processes, through a real daemon: the mail verifies
with dkimpy against the key in the test DNS, and a pool process killed with SIGKILL costs
no message (the next signature is made by a new worker)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from tests.integration.test_dkim_smtp import MSG, _run, _send, _verify

RSA_TOML = """
[dkim."signer.test"]
selector = "rsa1"
key = "{rsa}"

[signing]
workers = 2
"""


def _pool_pids(parent: int) -> set[int]:
    """The daemon's signing workers (`python -c "from mta.dkim.pool import serve..."`)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmd = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"mta.dkim.pool" in cmd:
            found.add(int(entry.name))
    return found


async def _wait_for(predicate, timeout: float = 30.0):
    async with asyncio.timeout(timeout):
        while not (value := predicate()):
            await asyncio.sleep(0.05)
    return value


async def test_signed_in_the_pool_and_a_killed_worker_loses_nothing(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, dns, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path,
                                 RSA_TOML)
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    [m] = await mx.wait_for_messages(1, timeout=30)
    assert b"a=rsa-sha256" in m.body.split(b"\r\n\r\n")[0]
    assert await asyncio.to_thread(_verify, m.body, dns.nameserver)

    pids = await _wait_for(lambda: _pool_pids(mta.proc.pid))
    assert pids  # the pool signed it, not a thread
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    await _wait_for(lambda: not (_pool_pids(mta.proc.pid) & pids))

    second = MSG.replace(b"<s1@signer.test>", b"<s2@signer.test>")
    await asyncio.to_thread(_send, mta.smtp_port, second)
    got = await mx.wait_for_messages(2, timeout=60)
    assert await asyncio.to_thread(_verify, got[1].body, dns.nameserver)
    assert b"<s2@signer.test>" in got[1].body
    new = await _wait_for(lambda: _pool_pids(mta.proc.pid))
    assert not new & pids  # new workers
    assert mta.proc.poll() is None
    assert "DKIM signing worker" in mta.stderr and "a new worker starts" in mta.stderr


async def test_sighup_retires_the_signing_workers_for_new_ones(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mta, dns, mx, _ = await _run(mta_factory, dns_server_factory, mx_factory, tmp_path,
                                 RSA_TOML)
    old = await _wait_for(lambda: len(_pool_pids(mta.proc.pid)) == 2
                          and _pool_pids(mta.proc.pid))
    mta.proc.send_signal(signal.SIGHUP)
    await _wait_for(lambda: "configuration reloaded" in mta.stderr)
    # The old workers exit (they had nothing left to sign), two new ones sign from now on.
    new = await _wait_for(lambda: not (_pool_pids(mta.proc.pid) & old)
                          and len(_pool_pids(mta.proc.pid)) == 2 and _pool_pids(mta.proc.pid))
    await asyncio.to_thread(_send, mta.smtp_port, MSG)
    [m] = await mx.wait_for_messages(1, timeout=30)
    assert await asyncio.to_thread(_verify, m.body, dns.nameserver)
    assert _pool_pids(mta.proc.pid) == new
    assert "died" not in mta.stderr  # retired, not crashed
