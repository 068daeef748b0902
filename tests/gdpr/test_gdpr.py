"""`mta gdpr export` and `mta gdpr erase` against the real daemon: mail to and from one
address over real SMTP, some delivered to a real test MX, some kept queued by an MX that
defers it; the address suppressed; the events log rotated (gzip) as it grows; its events
in the webhook outbox of a receiver that answers 503. The export shows all of it; after
the erasure a byte search of the spool directory, the events files and the daemon's log
finds the address nowhere (nor its local part, in any case), mail to it is refused as
suppressed (after a restart too), and the other addresses' mail, events and entries are
still there."""

from __future__ import annotations

import asyncio
import json
import smtplib
import urllib.error
import urllib.request
from pathlib import Path

from tests.integration.test_delivery import ZONES
from tests.support.daemon import ADMIN_TOKEN
from tests.support.receiver import WebhookReceiver

ADDRESS = "Zqx.Erasable@dest.test"
LOCAL = b"zqx.erasable"
OTHER = "keep.me@dest.test"  # shares messages with ADDRESS; must be untouched
LATER = "later@dest.test"  # deferred like ADDRESS: a message to both stays queued

TOML = """
[log.rotate]
max_size = "3KiB"
keep = 50
compress = "gzip"

[webhooks]
batch_wait = "50ms"
retry_initial = "200ms"
retry_max = "500ms"

[plans.counted]
unique_recipients_per_month = 1000

[tenants.default]
plan = "counted"
"""


def _msg(subject: str, sender: str, to: list[str]) -> bytes:
    return (f"From: <{sender}>\r\nTo: {', '.join(to)}\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject}@sender.test>\r\n\r\nbody of {subject}\r\n").encode()


def _send(port: int, sender: str, rcpts: list[str], subject: str) -> tuple[int, str]:
    """(code, queue id or reply text) of one message over SMTP."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            code, text = s.rcpt(r)
            if code != 250:
                return code, text.decode()
        code, reply = s.data(_msg(subject, sender, rcpts))
    assert code == 250, reply
    return code, reply.decode().rsplit(" ", 1)[1]


def _hits(root: Path, needles: list[bytes]) -> list[str]:
    """Every file under `root` that holds one of `needles`, in any case (gzip read too)."""
    import gzip

    found = []
    for p in sorted(root.rglob("*")):
        if not p.is_file():
            continue
        data = p.read_bytes()
        if p.name.endswith(".gz"):
            data += gzip.decompress(data)
        low = data.lower()
        for n in needles:
            if n.lower() in low:
                found.append(f"{p.relative_to(root)}: {n!r}")
    return found


def _post(mta, path: str, body: dict, token: str | None = ADMIN_TOKEN) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method="POST",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _json(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


async def _wait(mta, predicate, what: str, timeout: float = 20.0) -> list[dict]:
    found = await asyncio.to_thread(mta.wait_events, predicate, timeout)
    assert found, f"no {what}; events: {mta.events()}"
    return found


def _all_events(mta) -> list[dict]:
    """Events of the current file and of every rotated one."""
    import gzip

    out = []
    for p in sorted(mta.workdir.glob("events.jsonl*")):
        text = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        out += [json.loads(line) for line in text.splitlines() if line.strip()]
    return out


async def test_export_then_erase_leaves_no_byte_of_the_address(
        mta_factory, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.2")
    await mx_factory("127.0.0.3")
    dns = dns_server_factory(ZONES)
    rx = await WebhookReceiver.start()
    try:
        mta = await asyncio.to_thread(
            mta_factory, TOML, dns=dns.nameserver, delivery_port=mx_factory.port,
            delivery_extra='retry = ["1s"]\nmax_age = "1h"\nconnect_timeout = "3s"')
        add = await asyncio.to_thread(mta.cli, "webhooks", "add", rx.url, "--json")
        rx.secret = _json(add)["secret"]
        rx.status = 503  # every batch stays in the outbox, retried

        # Delivered: a message to it, and one from it.
        port = mta.smtp_port
        _, to_id = await asyncio.to_thread(_send, port, "s@sender.test", [ADDRESS], "to")
        _, from_id = await asyncio.to_thread(_send, port, ADDRESS, [OTHER], "from")
        await _wait(mta, lambda e: e["event"] == "delivered" and e["id"] == from_id,
                    "delivery from it")
        await _wait(mta, lambda e: e["event"] == "delivered" and e["id"] == to_id,
                    "delivery to it")
        # Kept queued: its MX defers it (and LATER), accepts OTHER.
        mx.script(ADDRESS, "451 4.2.1 mailbox busy, try later")
        mx.script(LATER, "451 4.2.1 mailbox busy, try later")
        _, shared_id = await asyncio.to_thread(_send, port, "s@sender.test",
                                               [ADDRESS, LATER], "shared")
        _, only_id = await asyncio.to_thread(_send, port, "s@sender.test", [ADDRESS], "only")
        _, sent_id = await asyncio.to_thread(_send, port, ADDRESS, [LATER], "sent")
        _, other_id = await asyncio.to_thread(_send, port, "s@sender.test", [OTHER], "other")
        for msg_id in (shared_id, only_id, sent_id):
            await _wait(mta, lambda e, i=msg_id: e["event"] == "deferred" and e["id"] == i,
                        f"deferral of {msg_id}")
        # Suppressed, beside an entry of another address that must stay.
        for a in (ADDRESS, OTHER):
            out = await asyncio.to_thread(mta.cli, "suppress", "add", a, "--reason", "manual")
            assert out.returncode == 0, out.stderr
        await _wait(mta, lambda e: e["event"] == "suppression_added", "suppression event")
        assert list(mta.workdir.glob("events.jsonl-*.gz")), "the events log never rotated"

        # The admin API: admin token only, a clear 400 for what is no address.
        status, doc = await asyncio.to_thread(_post, mta, "/api/v1/admin/gdpr/erase",
                                              {"address": ADDRESS}, None)
        assert status == 401
        for body, code in (({"address": "no-at-sign"}, "bad_address"), ({}, "missing_field"),
                           ({"address": ADDRESS, "x": 1}, "unknown_field")):
            status, doc = await asyncio.to_thread(_post, mta, "/api/v1/admin/gdpr/export", body)
            assert (status, doc["error"]["code"]) == (400, code), doc
        status, doc = await asyncio.to_thread(_post, mta, "/api/v1/admin/gdpr/export",
                                              {"address": f"<{ADDRESS.upper()}>"})
        assert status == 200 and doc["workers"][0]["queue"]

        export = _json(await asyncio.to_thread(mta.cli, "gdpr", "export", ADDRESS))
        assert export["address"] == ADDRESS.lower()
        [w] = export["workers"]
        roles = {q["message"]["id"]: q["roles"] for q in w["queue"]}
        assert roles[to_id] == ["recipient"]  # done: its body is gone
        assert roles[only_id] == ["recipient", "named"]  # queued: its To: header
        assert "sender" in roles[from_id] and "sender" in roles[sent_id]
        assert "recipient" in roles[shared_id] and other_id not in roles
        states = {q["message"]["id"]: q["message"]["state"] for q in w["queue"]}
        assert states[to_id] == "done" and states[only_id] == "queued"
        kinds = {e["event"] for e in w["events"]}
        assert {"received", "delivered", "deferred"} <= kinds
        assert any(e["file"].endswith(".gz") for e in w["events"]), "rotated files read"
        assert [s["scope"] for s in w["suppressions"]] == ["global"]
        assert any(u["refs"] >= 1 for u in w["policy"]["unique_recipients"])
        assert w["webhooks"] and all(b["events"] for b in w["webhooks"])

        needles = [ADDRESS.encode(), LOCAL]
        before = _hits(mta.workdir, needles)
        assert any(h.startswith("spool/spool-00.sqlite") for h in before), before
        assert any(h.startswith("spool/policy.db") for h in before), before
        assert any(h.startswith("spool/webhooks-00.sqlite") for h in before), before
        assert any(".gz" in h for h in before), before

        # A schema upgrade's rollback copy (mta.dbupgrade): the operator's, not rewritten,
        # but named by the erasure so that it can be deleted once the upgrade stands.
        backup = mta.workdir / "spool" / "policy.db.v2-20261201T000000Z.bak"
        backup.write_bytes((mta.workdir / "spool" / "policy.db").read_bytes() + ADDRESS.encode())
        erased = _json(await asyncio.to_thread(mta.cli, "gdpr", "erase", ADDRESS, "--json"))
        [e] = erased["workers"]
        assert e["backups_naming_it"] == [backup.name]
        backup.unlink()
        assert e["token"].startswith("hmac:")
        assert e["queue"]["messages_deleted"] >= 4  # to, from, only, sent
        assert e["queue"]["messages_trimmed"] == 1  # shared: LATER still waits
        assert e["suppressions"]["entries_hashed"] == 1

        # Nothing left anywhere: spool directory (SQLite files, WAL, outbox), events
        # files (rotated and gzipped ones too), the daemon's own log.
        assert _hits(mta.workdir, needles) == []

        # Still refused, as suppressed: by its hash.
        code, text = await asyncio.to_thread(_send, port, "s@sender.test", [ADDRESS], "again")
        assert code == 550 and "suppressed" in text
        # Everyone else's data is as it was.
        queue = {m["id"]: m for m in mta.queue_list()}
        assert [r["address"] for r in queue[shared_id]["recipients"]] == [LATER]
        assert queue[shared_id]["state"] == "queued"
        assert other_id in queue
        events = _all_events(mta)
        assert any(ev["event"] == "delivered" and ev.get("recipient") == OTHER
                   and ev["id"] == other_id for ev in events)
        lst = _json(await asyncio.to_thread(mta.cli, "suppress", "list", "--json"))
        addresses = {s["address"] for s in (lst if isinstance(lst, list) else lst["entries"])}
        assert OTHER in addresses and e["token"] in addresses
        # What is left of the shared message still goes to LATER, with the address gone
        # from its header.
        mx.script(LATER, "250 2.0.0 ok")
        await asyncio.to_thread(mta.cli, "queue", "flush", shared_id)
        await _wait(mta, lambda ev: ev["event"] == "delivered" and ev["id"] == shared_id,
                    "delivery of the shared message to LATER", timeout=30)
        got = [m for m in mx.messages if LATER in m.rcpt_tos and b"shared" in m.body]
        assert got and LOCAL not in got[-1].body.lower()

        # After a restart the key is read again: still refused.
        assert await asyncio.to_thread(mta.terminate) == 0
        await asyncio.to_thread(mta.start)
        code, text = await asyncio.to_thread(_send, mta.smtp_port, "s@sender.test",
                                             [ADDRESS.upper()], "after-restart")
        assert code == 550 and "suppressed" in text
    finally:
        await rx.stop()
