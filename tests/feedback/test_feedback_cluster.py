"""The feedback loop across two real `mta serve` nodes on one real Redis: a message sent
through node A, its DSN and a one-click unsubscribe arriving at node B; node A refuses both
recipients at its next RCPT (the tokens carry everything, the entries live in Redis)."""

from __future__ import annotations

import asyncio

import redis

from tests.feedback.test_feedback_smtp import _dsn, _head, _http, _msg, _report, _send_as, _setup


async def test_a_report_and_an_unsubscribe_at_one_node_suppress_on_the_other(
    mta_factory, dns_server_factory, mx_factory, tmp_path, redis_url
):
    url = redis_url.rsplit("/", 1)[0] + "/12"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    cluster = f'\n[cluster]\nredis_url = "{url}"\n'
    a, _dns, mx = await _setup(mta_factory, dns_server_factory, mx_factory, tmp_path, cluster)
    # Node B: the same tenants, keys, secret and Redis (its own ports and spool).
    text = a.config_path.read_text()
    tail = text[text.index("[tenants.shop]") :]
    b = await asyncio.to_thread(mta_factory, "\n" + tail, smtp_extra="relay_networks = []")
    for who in ("hank", "ivy"):
        assert (
            await asyncio.to_thread(
                _send_as,
                a,
                "shop",
                f"{who}@dest.test",
                _msg(f"{who}@dest.test", f"{who}@shop.test", "marketing"),
            )
        )[0] == 250
    msgs = {m.rcpt_tos[0]: m for m in await mx.wait_for_messages(2, timeout=15)}
    hank = msgs["hank@dest.test"]
    code, _ = await asyncio.to_thread(
        _report, b, hank.mail_from, _dsn("hank@dest.test", _head(hank.body))
    )
    assert code == 250
    link = _head(msgs["ivy@dest.test"].body).split(b"List-Unsubscribe: <")[1].split(b">")[0]
    path = link.decode().split("/u/", 1)[1]
    status, _ = await asyncio.to_thread(
        _http, "POST", f"http://127.0.0.1:{b.http_port}/u/{path}", b"List-Unsubscribe=One-Click"
    )
    assert status == 200
    for who, reason in (("hank", b"hard_bounce"), ("ivy", b"unsubscribe")):
        for _ in range(100):
            code, text = await asyncio.to_thread(
                _send_as, a, "shop", f"{who}@dest.test", _msg(f"{who}@dest.test", "x@shop.test")
            )
            if code == 550:
                break
            await asyncio.sleep(0.1)
        assert code == 550 and reason in text, text
