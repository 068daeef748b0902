"""The dispatcher with real parts: a real spool on disk, the zone-text resolver, real MX
servers on 127.0.0.x recording the peer address, and a DsnSink that keeps what it is
given. Routing comes from the envelope; fates are applied durably; DSNs go to the sink
with a complete envelope."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mta.config import parse_config
from mta.delivery.dispatcher import Dispatcher
from mta.dns import TestResolver
from mta.observe.events import EventLog
from mta.queue import Envelope, Recipient, Spool

ZONES = {"dest.test": "@ MX 10 mx\nmx A 127.0.0.4\n"}


class KeepingSink:
    """A DsnSink that keeps each DSN instead of queueing it."""

    def __init__(self) -> None:
        self.got: list[tuple[Envelope, bytes]] = []

    async def submit(self, envelope: Envelope, body: bytes) -> str:
        self.got.append((envelope, body))
        return "dsn-1"


async def _dispatcher(tmp_path: Path, port: int) -> tuple[Dispatcher, Spool, KeepingSink]:
    cfg = parse_config(f'''
[server]
hostname = "mta.test"
[spool]
dir = "spool"
[delivery]
port = {port}
retry = ["1h"]
[[egress.source]]
name = "shared"
address = "127.0.0.10"
[[egress.source]]
name = "bulk1"
address = "127.0.0.11"
[egress.pool.default]
sources = {{ shared = 1 }}
[egress.pool.bulk]
sources = {{ bulk1 = 1 }}
[tenants.agency]
pool = "bulk"
''', str(tmp_path / "mta.toml"), tmp_path)
    spool = await Spool.open(cfg.spool.dir)
    sink = KeepingSink()
    d = Dispatcher(cfg, spool=spool, events=EventLog(None), resolver=TestResolver(ZONES),
                   dsn_sink=sink)
    await d.start()
    return d, spool, sink


async def _accept(d: Dispatcher, spool: Spool, envelope: Envelope) -> str:
    msg_id = await spool.put(envelope, b"Subject: t\r\n\r\nbody\r\n")
    d.accepted(msg_id, envelope)
    return msg_id


async def test_delivery_leaves_from_the_pool_the_envelope_names(tmp_path, mx_factory):
    mx = await mx_factory("127.0.0.4")
    d, spool, _ = await _dispatcher(tmp_path, mx_factory.port)
    try:
        # Tenant "nobody" is not configured: only the envelope says "bulk".
        await _accept(d, spool, Envelope("nobody", "s@x.test", [Recipient("a@dest.test")],
                                         pool="bulk"))
        # No decision on the envelope: the configured tenant's pool.
        await _accept(d, spool, Envelope("agency", "s@x.test", [Recipient("b@dest.test")]))
        await _accept(d, spool, Envelope("nobody", "s@x.test", [Recipient("c@dest.test")]))
        await mx.wait_for_messages(3, timeout=10)
        peers = {m.rcpt_tos[0]: m.peer[0] for m in mx.messages}
        assert peers == {"a@dest.test": "127.0.0.11", "b@dest.test": "127.0.0.11",
                         "c@dest.test": "127.0.0.10"}
    finally:
        await d.stop(5)
        await spool.close()


async def test_a_bounce_is_recorded_then_its_dsn_goes_to_the_sink(tmp_path, mx_factory):
    mx = await mx_factory("127.0.0.4")
    mx.script("bad@dest.test", "550 5.1.1 no such user")
    d, spool, sink = await _dispatcher(tmp_path, mx_factory.port)
    try:
        msg_id = await _accept(d, spool, Envelope(
            "agency", "s@x.test", [Recipient("bad@dest.test"), Recipient("ok@dest.test")],
            msg_class="marketing", pool="bulk"))
        for _ in range(200):
            if sink.got:
                break
            await asyncio.sleep(0.05)
        [(env, body)] = sink.got
        assert (env.tenant, env.mail_from, [r.address for r in env.recipients],
                env.msg_class, env.pool) == ("agency", "", ["s@x.test"], "marketing", "bulk")
        assert b"5.1.1" in body and b"bad@dest.test" in body
        info = await spool.get(msg_id)
        assert [r.state for r in info.recipients] == ["bounced", "delivered"]
    finally:
        await d.stop(5)
        await spool.close()
