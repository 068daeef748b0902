"""`mta queue explain` and the shaping explain name every limit a worker waits for, because
both ask the shaper's gate: here the cross-path [rate_limits] and the volume licence's cap
on outbound connections, through the real daemon's admin API and CLI."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import urllib.request

from tests.integration.test_licence_smtp import _licence
from tests.integration.test_shaping import _send, _start, _wait_for
from tests.support.daemon import ADMIN_TOKEN


async def _explain(mta, msg_id: str) -> dict:
    proc = await asyncio.to_thread(mta.cli, "queue", "explain", msg_id)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["recipients"][0]


def _admin_get(mta, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}")
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


async def test_explain_names_a_cross_path_rate_limit(mta_factory, dns_server_factory,
                                                     mx_factory):
    mx = await mx_factory("127.0.0.4")
    mta = await _start(mta_factory, dns_server_factory, mx_factory, """
[rate_limits]
tenant_message_rate = "1/m"
""")
    rcpts = ["a@other.test", "b@other.test"]
    ids = await _send(mta, rcpts, "rl")
    await mx.wait_for_messages(1, timeout=15)
    t_first = time.time()
    await asyncio.sleep(0.3)
    # Either may go first (each is routed by its own task): the other one waits.
    [delivered] = mx.messages[0].rcpt_tos
    [second] = [i for i, rcpt in zip(ids, rcpts, strict=True) if rcpt != delivered]
    r = await _explain(mta, second)
    assert r["waiting_for"] == "tenant_message_rate", r
    assert abs(r["until"] - (t_first + 60)) < 2.0, r
    assert r["detail"].startswith("[rate_limits] tenant_message_rate 1/m"), r
    assert len(mx.messages) == 1
    site = urllib.parse.quote(r["site"], safe="")
    shaping = await asyncio.to_thread(_admin_get, mta,
                                      f"/api/v1/admin/shaping/sites/{site}?tenant=default")
    assert [h["limit"] for h in shaping["holds"]] == ["tenant_message_rate"], shaping


async def test_explain_names_the_licence_connection_cap(mta_factory, dns_server_factory,
                                                        mx_factory, tmp_path):
    dest = await mx_factory("127.0.0.2")
    other = await mx_factory("127.0.0.4")
    dest.script("slow@dest.test", "250 2.1.5 Ok", delay=4.0)  # holds the one connection
    mta = await _start(mta_factory, dns_server_factory, mx_factory,
                       _licence(tmp_path, volume=1000, connections=1))
    await _send(mta, ["slow@dest.test"], "busy")
    await _wait_for(lambda: dest.open_connections == 1 and "RCPT" in dest.commands, 10,
                    "the slow transaction")
    [waiting] = await _send(mta, ["x@other.test"], "capped")
    await asyncio.sleep(0.5)
    r = await _explain(mta, waiting)
    assert r["waiting_for"] == "licence_connections", r
    assert "of the licence's 1 outbound connection(s)" in r["detail"], r
    assert not other.connections  # it waits: a second connection would break the licence
    await other.wait_for_messages(1, timeout=20)
