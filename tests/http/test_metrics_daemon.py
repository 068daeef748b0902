"""GET /metrics of the real daemon (`mta serve` as a child process), parsed with
prometheus_client's parser: the values move as mail flows in and out."""

from __future__ import annotations

import asyncio
import json
import smtplib
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

MSG = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello\r\n"
ZONES = {"dest.test": """
@       IN MX 10 mx1.dest.test.
mx1     IN A 127.0.0.2
"""}


def scrape(mta) -> dict[tuple[str, frozenset], float]:
    url = f"http://127.0.0.1:{mta.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(s: dict, name: str, **labels: str) -> float:
    return s.get((name, frozenset(labels.items())), 0.0)


def send(port: int, rcpts: list[str]) -> list[int]:
    """RCPT codes; the message is sent if any recipient was accepted."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail("a@sender.test")
        codes = [s.rcpt(r)[0] for r in rcpts]
        if 250 in codes:
            code, _ = s.data(MSG)
            assert code == 250
    return codes


def test_received_and_rejected_move_after_smtp_sessions(mta_factory):
    mta = mta_factory(smtp_extra="max_recipients = 2")
    before = scrape(mta)
    assert value(before, "mta_recipients_received_total", tenant="default") == 0
    assert value(before, "mta_smtp_connections") == 0
    # RFC 5321 4.5.3.1.8: the third RCPT over our limit of 2 is refused (452).
    codes = send(mta.smtp_port, ["b@dest.test", "c@dest.test", "d@dest.test"])
    assert codes == [250, 250, 452]
    after = scrape(mta)
    assert value(after, "mta_messages_received_total", tenant="default") == 1
    assert value(after, "mta_recipients_received_total", tenant="default") == 2
    assert value(after, "mta_received_bytes_total", tenant="default") > len(MSG)
    assert value(after, "mta_rejected_total", tenant="default", reason="max_recipients") == 1
    # Scrape-time gauges: both recipients wait in the spool (DNS is a closed port). The
    # spool's GROUP BY is reused for 10x as long as it took, so on a loaded machine the
    # first scrape after the send may still show the one before it.
    deadline = time.monotonic() + 10
    while value(after, "mta_queue_recipients", state="queued") != 2 \
            and time.monotonic() < deadline:
        time.sleep(0.1)
        after = scrape(mta)
    assert value(after, "mta_queue_recipients", state="queued") == 2
    assert value(after, "mta_queue_oldest_message_age_seconds") < 60
    assert value(after, "mta_spool_commits_total") >= 1


async def test_delivered_and_bounced_by_category(mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.2")
    mx.script("gone@dest.test", "550 5.1.1 no such user")
    dns = dns_server_factory(ZONES)
    mta = await asyncio.to_thread(mta_factory, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]\nconnect_timeout = "3s"')
    await asyncio.to_thread(send, mta.smtp_port, ["ok@dest.test", "gone@dest.test"])
    found = await asyncio.to_thread(
        mta.wait_events, lambda e: e["event"] == "bounced" and e["recipient"] == "gone@dest.test",
        20)
    assert found, mta.events()
    await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "delivered", 20)
    s = await asyncio.to_thread(scrape, mta)
    # One delivery to one site is below the promotion threshold: site="other".
    assert value(s, "mta_recipients_delivered_total", tenant="default", site="other") == 1
    assert value(s, "mta_recipients_bounced_total", tenant="default", site="other",
                 category="invalid_recipient") == 1
    assert value(s, "mta_delivery_latency_seconds_count", tenant="default") == 1
    # The MX question and the address questions went to the DNS server, and were timed.
    assert value(s, "mta_dns_lookup_seconds_count", type="MX", outcome="ok") >= 1
    assert value(s, "mta_dns_lookup_seconds_count", type="A", outcome="ok") >= 1
    # The DSN to a@sender.test is a message of its own, accepted through the same ingress.
    assert value(s, "mta_messages_received_total", tenant="default") == 2


def test_injected_message_is_in_mta_queue_list(mta_factory):
    mta = mta_factory('[tenants.acme]\napi_keys = ["key-acme"]\n')
    body = json.dumps({"from": "a@sender.test", "to": ["b@dest.test"], "subject": "hi",
                       "text": "hello"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}/api/v1/messages",
                                 data=body, method="POST",
                                 headers={"Authorization": "Bearer key-acme",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        msg_id = json.loads(r.read())["id"]
    [m] = [m for m in mta.queue_list() if m["id"] == msg_id]
    assert m["tenant"] == "acme"
    s = scrape(mta)
    assert value(s, "mta_recipients_received_total", tenant="acme") == 1
