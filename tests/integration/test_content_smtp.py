"""Content rules through the real path: messages over real SMTP (and the HTTP injection
API) into the real daemon, whose rules run in their worker process, whose URL blocklist
lookups go to the real test DNS server (Unbound), and whose accepted mail is delivered to
a real MX sink on 127.0.0.2. Each action: reject (550 5.7.1 with the rule's text), hold
(nothing delivered until `mta queue release`), tag (the header at the sink), score
thresholds; a 25 MB message being scanned does not stop other sessions."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import smtplib
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import ADMIN_TOKEN

ZONES = {
    "dest.test": """
@       IN MX 10 mx1.dest.test.
mx1     IN A 127.0.0.2
""",
    # A URI blocklist (RFC 5782): listed.example is on it; error.example answers the
    # list's "error" code, which is not a listing.
    "uribl.test": """
listed.example      IN A 127.0.0.2
www.listed2.example IN A 127.0.0.3
error.example       IN A 127.255.255.254
""",
}

RULES = """
[content]
tag_score = 2
hold_score = 6
reject_score = 10

[[content.rules]]
name = "exe"
attachment_extensions = ["exe", "scr"]
text = "Executable attachments are not accepted"

[[content.rules]]
name = "wire"
body = "(?i)wire transfer"
action = "hold"
text = "Payment requests are reviewed"

[[content.rules]]
name = "newsletter"
header = "Subject"
pattern = "(?i)newsletter"
action = "tag"

[[content.rules]]
name = "urgent"
header = "Subject"
pattern = "(?i)urgent"
action = "score"
score = 3

[[content.rules]]
name = "prize"
body = "(?i)you have won"
action = "score"
score = 7

[[content.rules]]
name = "uribl"
url_blocklist = "uribl.test"
text = "Message links to a blocklisted domain"
"""


def _msg(subject: str, body: str = "Hello.", extra: str = "") -> bytes:
    return (f"From: a@tenant.test\r\nTo: b@dest.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{abs(hash((subject, body)))}@tenant.test>\r\n{extra}\r\n"
            f"{body}\r\n").encode()


EXE = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=zz\r\n", (
    "--zz\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
    "--zz\r\nContent-Type: application/octet-stream\r\n"
    "Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n"
    "Content-Transfer-Encoding: base64\r\n\r\nTVqQAAMAAAAEAAAA\r\n--zz--"))


def _send(port: int, msg: bytes, rcpt: str = "b@dest.test") -> tuple[int, str]:
    """The reply to the end of DATA: (code, text)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as s:
        s.ehlo("client.test")
        s.mail("a@tenant.test")
        s.rcpt(rcpt)
        code, text = s.data(msg)
        return code, text.decode()


async def _start(mta_factory, dns_server_factory, mx_factory, toml: str = RULES):
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(mta_factory, toml, dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    return mta, mx


def _admin(mta, path: str, data: bytes | None = None,
           content_type: str = "application/json") -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}{path}", data=data, method="POST" if data else "GET",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _scrape(mta) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mta.http_port}/metrics", timeout=10) as r:
        return r.read().decode()


def _content_events(mta, n: int = 1) -> list[dict]:
    """The `content` events, once there are at least `n` (the log is written behind)."""
    for _ in range(300):
        found = [e for e in mta.events() if e["event"] == "content"]
        if len(found) >= n:
            return found
        time.sleep(0.1)
    return found


async def test_each_action_through_real_smtp(mta_factory, dns_server_factory, mx_factory):
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory)
    port = mta.smtp_port

    # reject: 550 5.7.1 with the rule's public text; nothing queued, nothing delivered.
    code, text = await asyncio.to_thread(_send, port, _msg("Invoice", EXE[1], EXE[0]))
    assert (code, text) == (550, "5.7.1 Executable attachments are not accepted")
    # URL on the blocklist (the RFC 5782 lookup through the test DNS server): reject.
    code, text = await asyncio.to_thread(
        _send, port, _msg("Links", "See https://Listed.Example/offer?id=1 now"))
    assert (code, text) == (550, "5.7.1 Message links to a blocklisted domain")
    # A subdomain of a listed name is found through its parent; the list's error code
    # (127.255.255.254) is not a listing.
    code, _ = await asyncio.to_thread(
        _send, port, _msg("Links", "http://a.b.www.listed2.example/ or nothing"))
    assert code == 550
    code, _ = await asyncio.to_thread(
        _send, port, _msg("Fine links", "http://error.example/ and http://clean.example/"))
    assert code == 250

    # tag: delivered with the header naming the rule.
    code, _ = await asyncio.to_thread(_send, port, _msg("Our newsletter"))
    assert code == 250
    # score under every threshold: delivered untagged; urgent (3) >= tag_score (2): tagged;
    # prize (7) >= hold_score is tested with hold below; urgent + prize (10): rejected.
    code, _ = await asyncio.to_thread(_send, port, _msg("Plain note"))
    assert code == 250
    code, _ = await asyncio.to_thread(_send, port, _msg("URGENT reply"))
    assert code == 250
    code, text = await asyncio.to_thread(_send, port, _msg("Urgent", "You have won!"))
    assert (code, text) == (550, "5.7.1 Message refused by content policy")

    delivered = await mx.wait_for_messages(4, timeout=30)
    by_subject = {m.body.split(b"Subject: ")[1].split(b"\r\n")[0]: m.body for m in delivered}
    assert b"X-Mta-Content: newsletter; score=0\r\n" in by_subject[b"Our newsletter"]
    assert b"X-Mta-Content: urgent; score=3\r\n" in by_subject[b"URGENT reply"]
    assert b"X-Mta-Content" not in by_subject[b"Plain note"]
    assert b"X-Mta-Content" not in by_subject[b"Fine links"]

    events = _content_events(mta, 6)
    assert [(e["action"], e["rules"]) for e in events] == [
        ("reject", ["exe"]), ("reject", ["uribl"]), ("reject", ["uribl"]),
        ("tag", ["newsletter"]), ("tag", ["urgent"]), ("reject", ["urgent", "prize"])]
    assert events[-1]["score"] == 10 and events[-1]["protocol"] == "smtp"
    assert mta.queue_list() and all(m["state"] != "held" for m in mta.queue_list())
    # The same verdicts as metrics: by tenant and action, and each rule's hits.
    scrape = await asyncio.to_thread(_scrape, mta)
    tenant = events[0]["tenant"]
    assert f'mta_content_verdicts_total{{action="reject",tenant="{tenant}"}} 4.0' in scrape
    assert f'mta_content_verdicts_total{{action="tag",tenant="{tenant}"}} 2.0' in scrape
    assert 'mta_content_rule_hits_total{rule="uribl"} 2.0' in scrape
    assert 'mta_content_rule_hits_total{rule="urgent"} 2.0' in scrape


async def test_hold_then_release_and_delete(mta_factory, dns_server_factory, mx_factory):
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory)
    code, text = await asyncio.to_thread(
        _send, mta.smtp_port, _msg("Payment", "Please make the wire transfer today."))
    assert code == 250
    held_id = text.rsplit(" ", 1)[1]
    # A score reaching hold_score holds too.
    code, text = await asyncio.to_thread(_send, mta.smtp_port, _msg("Hi", "You have won"))
    assert code == 250
    score_id = text.rsplit(" ", 1)[1]
    # Mail sent after them is delivered: the held ones are not waiting, they are held.
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("After"))
    assert code == 250
    [after] = await mx.wait_for_messages(1, timeout=30)
    assert b"Subject: After" in after.body
    states = {m["id"]: m["state"] for m in mta.queue_list()}
    assert states[held_id] == states[score_id] == "held"
    show = mta.cli("queue", "show", held_id)
    assert show.returncode == 0, show.stderr
    [rcpt] = json.loads(show.stdout)["recipients"]
    assert rcpt["state"] == "held"
    assert "Held by content policy: Payment requests are reviewed" in rcpt["last_reply"]
    [ev] = [e for e in _content_events(mta) if e.get("id") == held_id]
    assert (ev["action"], ev["rules"], ev["reason"]) == ("hold", ["wire"],
                                                         "Payment requests are reviewed")

    # Released: delivered, with the header that says why it was held.
    proc = mta.cli("queue", "release", held_id)
    assert proc.returncode == 0, proc.stderr
    msgs = await mx.wait_for_messages(2, timeout=30)
    assert b"X-Mta-Content: wire; score=0\r\n" in msgs[1].body
    assert b"wire transfer" in msgs[1].body
    # Deleted: never delivered.
    proc = mta.cli("queue", "delete", score_id)
    assert proc.returncode == 0, proc.stderr
    assert score_id not in {m["id"] for m in mta.queue_list()}

    # A held message stays held across a restart.
    code, text = await asyncio.to_thread(
        _send, mta.smtp_port, _msg("Again", "wire transfer again"))
    again = text.rsplit(" ", 1)[1]
    mta.terminate()
    mta.start()
    assert {m["id"]: m["state"] for m in mta.queue_list()}[again] == "held"
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("After restart"))
    assert code == 250
    msgs = await mx.wait_for_messages(3, timeout=30)
    assert b"Subject: After restart" in msgs[2].body
    assert {m["id"]: m["state"] for m in mta.queue_list()}[again] == "held"


async def test_http_injection_and_the_admin_api(mta_factory, dns_server_factory,
                                                mx_factory):
    toml = RULES + '\n[tenants.acme]\napi_keys = ["k-acme-0123456789"]\n'
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, toml)

    def inject(raw: str) -> tuple[int, dict]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{mta.http_port}/api/v1/messages", method="POST",
            data=json.dumps({"raw": raw, "from": "a@tenant.test",
                             "to": ["b@dest.test"]}).encode(),
            headers={"Authorization": "Bearer k-acme-0123456789",
                     "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    status, doc = await asyncio.to_thread(inject, _msg("Invoice", EXE[1], EXE[0]).decode())
    assert status == 422, doc
    assert doc["error"]["reply"] == "550 5.7.1 Executable attachments are not accepted"
    status, doc = await asyncio.to_thread(inject, _msg("Monthly newsletter").decode())
    assert status == 202, doc
    [m] = await mx.wait_for_messages(1, timeout=30)
    assert b"X-Mta-Content: newsletter; score=0\r\n" in m.body
    assert [e["protocol"] for e in _content_events(mta, 2)] == ["http", "http"]

    status, doc = await asyncio.to_thread(_admin, mta, "/api/v1/admin/content/rules")
    assert status == 200
    assert [(r["name"], r["kind"], r["action"]) for r in doc["rules"]] == [
        ("exe", "attachment", "reject"), ("wire", "body", "hold"),
        ("newsletter", "header", "tag"), ("urgent", "header", "score"),
        ("prize", "body", "score"), ("uribl", "url_blocklist", "reject")]
    assert doc["rules"][5]["zone"] == "uribl.test"
    assert doc["thresholds"] == {"reject_score": 10, "hold_score": 6, "tag_score": 2}

    # Dry run, as JSON and as a raw message: the verdict, and no event, nothing queued.
    before = len(mta.events())
    status, doc = await asyncio.to_thread(_admin, mta, "/api/v1/admin/content/check",
                                          json.dumps({"message": "Subject: urgent\n\n"
                                                      "visit http://listed.example/"}).encode())
    assert status == 200, doc
    assert doc["action"] == "reject" and doc["rules"] == ["urgent", "uribl"]
    assert doc["listings"] == [{"host": "listed.example", "zone": "uribl.test",
                                "code": "127.0.0.2"}]
    status, doc = await asyncio.to_thread(
        _admin, mta, "/api/v1/admin/content/check?sender=a@tenant.test",
        _msg("Hi", "wire transfer"), "message/rfc822")
    assert (status, doc["action"], doc["reason"]) == (200, "hold",
                                                      "Payment requests are reviewed")
    status, doc = await asyncio.to_thread(_admin, mta, "/api/v1/admin/content/check",
                                          json.dumps({"msg": "x"}).encode())
    assert (status, doc["error"]["code"]) == (400, "unknown_field")
    assert len(mta.events()) == before


async def test_a_reload_replaces_the_rules(mta_factory, dns_server_factory, mx_factory):
    mta, _ = await _start(mta_factory, dns_server_factory, mx_factory)
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("Crypto offer"))
    assert code == 250
    text = mta.config_path.read_text() + """
[[content.rules]]
name = "crypto"
header = "Subject"
pattern = "(?i)crypto"
text = "No crypto offers"
"""
    mta.config_path.write_text(text)
    mta.proc.send_signal(signal.SIGHUP)
    await _until(lambda: "configuration reloaded" in mta.stderr, "the reload")
    code, reply = await asyncio.to_thread(_send, mta.smtp_port, _msg("Crypto offer"))
    assert (code, reply) == (550, "5.7.1 No crypto offers")


async def _until(condition, what: str, timeout: float = 60.0) -> None:
    for _ in range(int(timeout * 10)):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _children_cpu(pid: int) -> float:
    """CPU seconds used by the direct children of `pid` (the rules' worker processes)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # ppid; then utime, stime are fields 11, 12 after ")"
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(170)
async def test_a_25mb_message_being_scanned_does_not_stop_other_sessions(
        mta_factory, dns_server_factory, mx_factory):
    # The big message's first line makes one pattern backtrack without end, so its scan
    # lasts until rules_timeout whatever the machine's speed: "the others went through
    # while it was being scanned" is then an order of events, not a timing. Two workers:
    # the other messages' scans run beside it (with one, they would queue behind it).
    # `re` alone: the one-pass prefilter would see the pattern cannot match and skip it.
    toml = RULES.replace("[content]\n", '[content]\nworkers = 2\nrules_timeout = "20s"\n'
                         'scan_limit = "25MiB"\nmulti_pattern = false\n') + """
[[content.rules]]
name = "backtracks"
body = "^(a+)+$"
action = "tag"
"""
    mta, mx = await _start(mta_factory, dns_server_factory, mx_factory, toml)
    line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n"
    big_body = "a" * 40 + "!\r\n" + line * (25_000_000 // len(line))
    big = _msg("Big one", big_body)
    assert 24_000_000 < len(big) < 25 * 1024 * 1024
    cpu_before = _children_cpu(mta.proc.pid)
    big_task = asyncio.ensure_future(asyncio.to_thread(_send, mta.smtp_port, big))
    # Until a worker has spent two CPU seconds on it: the big message is being scanned.
    await _until(lambda: _children_cpu(mta.proc.pid) > cpu_before + 2, "the big scan")
    assert not big_task.done()
    for i in range(5):
        code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg(f"Small {i}"))
        assert code == 250
    small = await mx.wait_for_messages(5, timeout=60)
    assert all(b"Subject: Small" in m.body for m in small)
    assert not big_task.done(), "the big message was answered before the small ones"
    code, text = await big_task
    # The pattern never finishes: the worker is killed at rules_timeout, and with
    # rules_fail = "closed" the client is told to try again later.
    assert (code, text) == (451, "4.7.1 Content check unavailable, try again later")
    code, _ = await asyncio.to_thread(_send, mta.smtp_port, _msg("After the big one"))
    assert code == 250
    msgs = await mx.wait_for_messages(6, timeout=60)
    assert b"Subject: After the big one" in msgs[5].body
