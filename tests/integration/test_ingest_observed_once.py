"""One fact, one event and one metric: what the events log and /metrics of a real daemon say
about a duplicate recipient and about an HTTP-injected message."""

from __future__ import annotations

import json
import smtplib
import urllib.request

KEY = "acme-key-0123456789"


def _metrics(mta) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        return r.read().decode()


def _msg(message_id: str) -> str:
    return f"From: a@sender.test\r\nMessage-ID: {message_id}\r\nSubject: hi\r\n\r\nhello\r\n"


def test_a_duplicate_recipient_is_one_event_and_counted_once(mta_factory):
    mta = mta_factory('[policy]\nduplicate_window = "1d"\n')
    for _ in range(2):  # the client lost our 250 and sends the same message again
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
            s.sendmail("a@sender.test", ["r1@dest.test"], _msg("<same@sender.test>"))
    assert len(mta.queue_list()) == 1
    mta.wait_events(lambda e: e["event"] == "duplicate")
    dropped = [e for e in mta.events() if e["event"] in ("duplicate", "suppressed")]
    assert [(e["event"], e["reason"], e["tenant"], e["recipient"]) for e in dropped] == [
        ("duplicate", "duplicate", "default", "r1@dest.test")]
    text = _metrics(mta)
    assert 'mta_recipients_suppressed_total{tenant="default"} 1.0' in text
    assert 'mta_events_total{event="suppressed"}' not in text


def test_an_http_injected_message_is_observed_once_as_http(mta_factory):
    mta = mta_factory(f'[tenants.acme]\napi_keys = ["{KEY}"]\n')
    body = json.dumps({"from": "a@acme.test", "to": ["b@dest.test", "c@dest.test"],
                       "subject": "hi", "text": "hello"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}/api/v1/messages",
                                 data=body, method="POST")
    req.add_header("Authorization", f"Bearer {KEY}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 202
        msg_id = json.loads(r.read())["id"]
    text = _metrics(mta)
    assert 'mta_ingest_latency_seconds_count{protocol="http"} 1.0' in text
    assert 'mta_ingest_latency_seconds_count{protocol="smtp"}' not in text
    assert 'mta_messages_received_total{tenant="acme"} 1.0' in text
    received = mta.wait_events(lambda e: e["event"] == "received")
    assert [(e["id"], e["recipient"], e["protocol"]) for e in received] == [
        (msg_id, "b@dest.test", "http"), (msg_id, "c@dest.test", "http")]


def test_an_smtp_message_is_observed_as_smtp(mta_factory):
    mta = mta_factory()
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.sendmail("a@sender.test", ["b@dest.test"], _msg("<one@sender.test>"))
    assert 'mta_ingest_latency_seconds_count{protocol="smtp"} 1.0' in _metrics(mta)
    [received] = mta.wait_events(lambda e: e["event"] == "received")
    assert received["protocol"] == "smtp"
