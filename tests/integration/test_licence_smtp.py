"""The volume licence through the real daemon: its connection cap holds over every path,
its monthly volume refuses mail with a temporary failure naming the licence, and a
tampered licence refuses to send."""

from __future__ import annotations

import asyncio
import datetime as dt
import smtplib

from mta.policy.licence import generate_licence_keypair, issue_licence

ZONES = {"dest.test": "@ MX 10 mx1\nmx1 A 127.0.0.2\n"}


def _licence(tmp_path, *, volume: int, connections: int, tamper: bool = False) -> str:
    private, public = generate_licence_keypair()
    today = dt.date.today()
    text = issue_licence(private, licensee="Example Sender Ltd", valid_from=today,
                         valid_until=today + dt.timedelta(days=30), monthly_volume=volume,
                         max_connections=connections)
    if tamper:
        text = text.replace(f'"monthly_volume": {volume}', f'"monthly_volume": {volume * 10}')
    path = tmp_path / "mta.licence"
    path.write_text(text)
    return f'[policy]\nlicence_file = "{path}"\nlicence_public_key = "{public}"\n'


def _send(port: int, rcpts: list[str]) -> list[tuple[int, bytes]]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("c")
        s.mail("a@sender.test")
        replies = [s.rcpt(r) for r in rcpts]
        if any(code == 250 for code, _ in replies):
            assert s.data(b"Subject: x\r\n\r\nhi\r\n")[0] == 250
    return replies


async def test_licence_connection_cap_holds_over_all_paths(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    mx = await mx_factory("127.0.0.2", delay=0.1)
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(
        mta_factory, _licence(tmp_path, volume=1000, connections=1), dns=dns.nameserver,
        delivery_port=mx_factory.port)
    for i in range(6):
        await asyncio.to_thread(_send, mta.smtp_port, [f"r{i}@dest.test"])
    await mx.wait_for_messages(6, timeout=30)
    assert mx.max_concurrent == 1  # connection_limit would allow 20


def test_monthly_volume_refuses_with_a_temporary_failure(mta_factory, tmp_path):
    mta = mta_factory(_licence(tmp_path, volume=2, connections=10))
    replies = _send(mta.smtp_port, ["a@dest.test", "b@dest.test", "c@dest.test"])
    assert [code for code, _ in replies] == [250, 250, 451]
    assert b"licence" in replies[2][1].lower()


def test_tampered_licence_refuses_to_send(mta_factory, tmp_path):
    mta = mta_factory(_licence(tmp_path, volume=5, connections=10, tamper=True))
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("c")
        code, text = s.mail("a@sender.test")
    assert code == 451 and b"licence" in text.lower()
