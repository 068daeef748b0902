"""The optional scanner: a real rspamd (Debian's package, started by tests/support/rspamd.py
on loopback) asked by the real daemon over its HTTP protocol at the end of DATA. Its
actions mapped onto ours (reject, soft reject -> hold, add header -> tag, no action), and
its outage (stopped, refusing connections, answering too slowly) under both
[content] scanner_fail modes."""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from tests.integration.test_content_smtp import ZONES, _content_events, _msg, _send
from tests.support.daemon import free_port
from tests.support.rspamd import RspamdServer


async def _start(mta_factory, dns_server_factory, mx_factory, content: str):
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(mta_factory, "[content]\n" + content, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    return mta, mx


async def test_rspamd_actions_become_ours(mta_factory, dns_server_factory, mx_factory,
                                          rspamd_server):
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, f"""
scanner_url = "{rspamd_server.url}"
scanner_fail = "closed"
""")
    port = mta.smtp_port
    code, text = await asyncio.to_thread(_send, port, _msg("RSPAMD-REJECT offer"))
    assert (code, text) == (550, "5.7.1 Message refused by content policy")
    code, _ = await asyncio.to_thread(_send, port, _msg("RSPAMD-HEADER offer"))
    assert code == 250
    code, text = await asyncio.to_thread(_send, port, _msg("RSPAMD-SOFT offer"))
    assert code == 250
    soft_id = text.rsplit(" ", 1)[1]
    code, _ = await asyncio.to_thread(_send, port, _msg("Plain"))
    assert code == 250

    msgs = await mx.wait_for_messages(2, timeout=30)
    tagged = next(m.body for m in msgs if b"RSPAMD-HEADER" in m.body)
    assert b"X-Mta-Content: rspamd; score=0\r\n" in tagged
    plain = next(m.body for m in msgs if b"Subject: Plain" in m.body)
    assert b"X-Mta-Content" not in plain
    assert {m["id"]: m["state"] for m in mta.queue_list()}[soft_id] == "held"
    events = _content_events(mta, 3)
    assert [(e["action"], e["scanner"]) for e in events] == [
        ("reject", "reject"), ("tag", "add header"), ("hold", "soft reject")]
    assert events[2]["reason"] == "scanner: soft reject"


async def test_scanner_score_adds_to_the_rules(mta_factory, dns_server_factory, mx_factory,
                                               rspamd_server):
    # rspamd's 7 (add header) counts for 7 x 0.5 here; with a rule's 3 that is 6.5, over
    # reject_score; rspamd's own action is mapped to "none" so only the score speaks.
    mta, _ = await _start(mta_factory, dns_server_factory, mx_factory, f"""
scanner_url = "{rspamd_server.url}"
scanner_score = 0.5
scanner_actions = {{ "add header" = "none" }}
reject_score = 6
[[content.rules]]
name = "urgent"
header = "Subject"
pattern = "(?i)urgent"
action = "score"
score = 3
""")
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("RSPAMD-HEADER"))
    assert code == 250
    code, text = await asyncio.to_thread(_send, mta.smtp_port, _msg("Urgent RSPAMD-HEADER"))
    assert (code, text) == (550, "5.7.1 Message refused by content policy")
    # The first found nothing that asks for an action: no event.
    [ev] = _content_events(mta, 1)
    assert (ev["score"], ev["rules"], ev["action"]) == (6.5, ["urgent"], "reject")


async def test_rspamd_stopped_fail_closed_then_back(mta_factory, dns_server_factory,
                                                    mx_factory, tmp_path):
    rspamd = RspamdServer(tmp_path / "rspamd").start()
    try:
        mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, f"""
scanner_url = "{rspamd.url}"
scanner_fail = "closed"
scanner_timeout = "5s"
""")
        code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("Before"))
        assert code == 250
        rspamd.stop()
        code, text = await asyncio.to_thread(_send, mta.smtp_port, _msg("During"))
        assert (code, text) == (451, "4.7.1 Content check unavailable, try again later")
        [ev] = _content_events(mta, 1)
        assert (ev["action"], ev["scanner"]) == ("tempfail", "unavailable")
        rspamd.start()
        code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("After"))
        assert code == 250
        msgs = await mx.wait_for_messages(2, timeout=30)
        assert [m.body.split(b"Subject: ")[1][:6] for m in msgs] == [b"Before", b"After\r"]
    finally:
        rspamd.stop()


async def test_scanner_refusing_connections_fail_open(mta_factory, dns_server_factory,
                                                      mx_factory):
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, f"""
scanner_url = "http://127.0.0.1:{free_port()}"
scanner_fail = "open"
""")
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("Unscanned"))
    assert code == 250
    [m] = await mx.wait_for_messages(1, timeout=30)
    assert b"X-Mta-Content" not in m.body
    [ev] = _content_events(mta, 1)
    assert (ev["action"], ev["scanner"]) == ("none", "unavailable")


@contextlib.asynccontextmanager
async def _silent_scanner():
    """An HTTP server that takes /checkv2 requests and never answers (a hung scanner)."""
    release = asyncio.Event()

    async def checkv2(request: web.Request) -> web.Response:
        await request.read()
        await release.wait()
        return web.json_response({"action": "no action", "score": 0})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/checkv2", checkv2)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        await runner.cleanup()


async def test_scanner_timeout_under_both_modes(mta_factory, dns_server_factory, mx_factory):
    async with _silent_scanner() as url:
        mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, f"""
scanner_url = "{url}"
scanner_timeout = "1s"
scanner_fail = "closed"
""")
        code, text = await asyncio.to_thread(_send, mta.smtp_port, _msg("Slow closed"))
        assert (code, text) == (451, "4.7.1 Content check unavailable, try again later")
        mta.config_path.write_text(mta.config_path.read_text().replace(
            'scanner_fail = "closed"', 'scanner_fail = "open"'))
        mta.terminate()
        mta.start()
        code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("Slow open"))
        assert code == 250
        [m] = await mx.wait_for_messages(1, timeout=30)
        assert b"Subject: Slow open" in m.body
