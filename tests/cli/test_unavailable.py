"""A daemon part that is not running answers 503, and the CLI says so with 69
(EX_UNAVAILABLE): here a real admin API (mta.http.app) built without a shaper or policy
engine, on loopback, driven by the real `mta` command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from aiohttp import web

from mta.http.app import make_app
from tests.support.daemon import ADMIN_TOKEN, free_port


async def mta_cli(config: Path, *args: str) -> tuple[int, str, str]:
    # The server runs on this test's event loop: the CLI must not block it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mta.cli", "-c", str(config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_shaping_and_policy_unavailable_are_69(tmp_path):
    runner = web.AppRunner(make_app(admin_token=ADMIN_TOKEN), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    config = tmp_path / "mta.toml"
    config.write_text(f'[http]\nlisten = ["127.0.0.1:{port}"]\n'
                      f'admin_token = "{ADMIN_TOKEN}"\n')
    try:
        code, _, err = await mta_cli(config, "shaping", "list")
        assert code == 69
        assert err == ("mta shaping list: no shaper runs in this process "
                       "(shaping_unavailable)\n")
        code, _, err = await mta_cli(config, "policy", "tenants")
        assert code == 69 and "(policy_unavailable)" in err
    finally:
        await runner.cleanup()
