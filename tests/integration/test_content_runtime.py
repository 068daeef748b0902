"""Content rules added at run time (issue 17: "Operator rules (config and admin API)"), on a
real daemon: a rule added through the admin API (and `mta content add`) refuses the next
message over real SMTP with its text, is listed beside the config's rules, outlives a
restart (it is in policy.db), and goes when removed; bad rules get the config's own
message. With two nodes on one real Redis, a rule added through one holds on the other."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import redis

from tests.integration.test_content_smtp import _msg, _send
from tests.support.daemon import ADMIN_TOKEN

DB = 2  # this file's Redis database, flushed first

ZONES = {"dest.test": "@ IN MX 10 mx1.dest.test.\nmx1 IN A 127.0.0.2\n"}

CONFIG_RULE = """
[content]
rules_poll = "300ms"

[[content.rules]]
name = "exe"
attachment_extensions = ["exe"]
"""

PHARMA = {"name": "pharma", "body": "(?i)v[i1]agra", "action": "reject",
          "text": "Pharmacy spam is not accepted"}


def _api(mta, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{mta.http_port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                 "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _spam() -> bytes:
    return _msg("Deal", f"Cheap V1agra today {time.monotonic_ns()}")


async def _until_refused(port: int, timeout: float = 20) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while True:
        code, text = await asyncio.to_thread(_send, port, _spam())
        if code != 250 or time.monotonic() > deadline:
            return code, text
        await asyncio.sleep(0.2)


async def test_a_rule_added_at_run_time_refuses_lists_survives_a_restart_and_goes(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    dns = dns_server_factory(ZONES)
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(mta_factory, CONFIG_RULE, dns=dns.nameserver,
                                  delivery_port=mx_factory.port)
    port = mta.smtp_port
    assert (await asyncio.to_thread(_send, port, _spam()))[0] == 250

    # Bad rules: the config loader's own words; the config's names are the config's.
    status, err = _api(mta, "POST", "/api/v1/admin/content/rules",
                       {"name": "bad", "body": "(unclosed"})
    assert status == 400 and err["error"]["code"] == "bad_rule"
    assert "body: bad regex '(unclosed'" in err["error"]["message"]
    status, err = _api(mta, "POST", "/api/v1/admin/content/rules",
                       {"name": "x", "body": "a", "colour": "red"})
    assert status == 400 and "colour: unknown key" in err["error"]["message"]
    status, err = _api(mta, "POST", "/api/v1/admin/content/rules",
                       {"name": "exe", "body": "a"})
    assert status == 409 and err["error"]["code"] == "rule_in_config"

    status, rec = _api(mta, "POST", "/api/v1/admin/content/rules", PHARMA)
    assert status == 201 and rec["name"] == "pharma" and rec["active"]
    # At once on the node that took it.
    code, text = await asyncio.to_thread(_send, port, _spam())
    assert (code, text) == (550, "5.7.1 Pharmacy spam is not accepted")
    status, again = _api(mta, "POST", "/api/v1/admin/content/rules", PHARMA)
    assert status == 409 and again["error"]["code"] == "rule_exists"

    listed = mta.cli("content", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert lines["exe"][4] == "config" and lines["pharma"][4] == "runtime"
    events = mta.wait_events(lambda e: e["event"] == "content_rule_added")
    assert [(e["rule"], e["action"], e["by"]) for e in events
            if e["event"] == "content_rule_added"] == [("pharma", "reject", "admin-api")]

    # A restart keeps it: it lives in the policy store, not in the process.
    await asyncio.to_thread(mta.terminate)
    await asyncio.to_thread(mta.start)
    code, text = await asyncio.to_thread(_send, port, _spam())
    assert (code, text) == (550, "5.7.1 Pharmacy spam is not accepted")

    # The CLI adds from a TOML table; a hold rule holds like a config one.
    rule = tmp_path / "subject.toml"
    rule.write_text('name = "shouting"\nheader = "Subject"\npattern = "^[A-Z ]{10,}$"\n'
                    'action = "hold"\ntext = "Held for review"\n')
    added = mta.cli("content", "add", str(rule))
    assert added.returncode == 0, added.stderr
    code, text = await asyncio.to_thread(_send, port, _msg("PLEASE READ THIS NOW"))
    assert code == 250
    held = text.rsplit(" ", 1)[1]
    assert {m["id"]: m["state"] for m in mta.queue_list()}[held] == "held"

    # Removed: mail goes again. A config rule cannot be removed here; an unknown one 404s.
    status, _ = _api(mta, "DELETE", "/api/v1/admin/content/rules/pharma")
    assert status == 200
    assert (await asyncio.to_thread(_send, port, _spam()))[0] == 250
    assert _api(mta, "DELETE", "/api/v1/admin/content/rules/exe")[0] == 409
    assert _api(mta, "DELETE", "/api/v1/admin/content/rules/pharma")[0] == 404
    removed = mta.cli("content", "remove", "pharma")
    assert removed.returncode != 0 and "no run-time content rule 'pharma'" in removed.stderr
    await mx.wait_for_messages(2, timeout=30)


async def test_a_rule_added_on_one_node_holds_on_the_other(mta_factory, dns_server_factory,
                                                           mx_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + f"/{DB}"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    dns = dns_server_factory(ZONES)
    await mx_factory("127.0.0.2")
    toml = CONFIG_RULE + f'\n[cluster]\nredis_url = "{url}"\n'
    a, b = [await asyncio.to_thread(mta_factory, toml, dns=dns.nameserver,
                                    delivery_port=mx_factory.port) for _ in range(2)]
    assert _api(a, "POST", "/api/v1/admin/content/rules", PHARMA)[0] == 201
    # b re-reads the store every rules_poll (300ms here).
    assert await _until_refused(b.smtp_port) == (550, "5.7.1 Pharmacy spam is not accepted")
    status, rules = _api(b, "GET", "/api/v1/admin/content/rules")
    assert status == 200 and [r["name"] for r in rules["runtime"]] == ["pharma"]
    assert _api(b, "DELETE", "/api/v1/admin/content/rules/pharma")[0] == 200
    deadline = time.monotonic() + 20
    while (await asyncio.to_thread(_send, a.smtp_port, _spam()))[0] != 250:
        assert time.monotonic() < deadline, "node a still runs the removed rule"
        await asyncio.sleep(0.2)
