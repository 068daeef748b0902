"""Run-time API keys on real daemons: `mta keys create` prints a key that works at once,
`list` never shows it, `revoke` refuses it at once, on this node and on a second node
sharing the same Redis; only a hash is stored; every change is an event. And the config's
keys follow a SIGHUP (issue 15): a key added works, a removed one is refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import urllib.error
import urllib.request

import redis

MSG = {"from": "a@acme.test", "to": ["b@dest.test"], "subject": "hi", "text": "hello"}


def _inject(mta, key: str) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}/api/v1/messages",
                                 data=json.dumps(MSG).encode(), method="POST")
    req.add_header("Authorization", f"Bearer {key}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_create_list_revoke_on_one_node_with_events(mta_factory):
    mta = mta_factory("[tenants.acme]\n")
    key = _ok(mta.cli("keys", "create", "acme", "--label", "web shop")).strip()
    assert key.startswith("mta_") and len(key) > 40
    assert _inject(mta, key) == 202
    listed = json.loads(_ok(mta.cli("keys", "list", "acme", "--json")))
    [rec] = listed
    assert rec["tenant"] == "acme" and rec["label"] == "web shop"
    assert rec["id"] == hashlib.sha256(key.encode()).hexdigest()[:12]
    assert key not in json.dumps(listed)
    # Only the hash is on disk: the key's text is nowhere in the policy database.
    db = (mta.workdir / "spool").rglob("policy.db*")
    assert all(key.encode() not in p.read_bytes() for p in db)

    assert mta.cli("keys", "create", "nobody").returncode != 0  # unknown tenant
    _ok(mta.cli("keys", "revoke", "acme", rec["id"]))
    assert _inject(mta, key) == 401
    proc = mta.cli("keys", "revoke", "acme", rec["id"])
    assert proc.returncode != 0 and "not_found" in proc.stderr
    events = mta.wait_events(lambda e: e["event"] == "key_revoked")
    assert events and events[0]["key_id"] == rec["id"] and events[0]["tenant"] == "acme"
    assert next(e for e in mta.events() if e["event"] == "key_created")["key_id"] == rec["id"]
    assert key not in (mta.workdir / "events.jsonl").read_text()


async def test_a_key_revoked_on_one_node_is_refused_at_once_on_the_other(
        mta_factory, redis_url):
    url = redis_url.rsplit("/", 1)[0] + "/11"  # this file's own database
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    toml = f'\n[cluster]\nredis_url = "{url}"\n\n[tenants.acme]\n'
    a = await asyncio.to_thread(mta_factory, toml)
    b = await asyncio.to_thread(mta_factory, toml)
    key = _ok(await asyncio.to_thread(a.cli, "keys", "create", "acme")).strip()
    # Made on A, usable on B at its next request, and listed there.
    assert await asyncio.to_thread(_inject, b, key) == 202
    [rec] = json.loads(_ok(await asyncio.to_thread(b.cli, "keys", "list", "--json")))
    other = _ok(await asyncio.to_thread(b.cli, "keys", "create", "acme")).strip()

    _ok(await asyncio.to_thread(b.cli, "keys", "revoke", "acme", rec["id"]))
    # Refused at once on both nodes (no cache, no wait); the other key still works.
    assert await asyncio.to_thread(_inject, a, key) == 401
    assert await asyncio.to_thread(_inject, b, key) == 401
    assert await asyncio.to_thread(_inject, a, other) == 202
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        dump = b"".join(r.dump(k) or b"" for k in r.keys("*"))
    assert key.encode() not in dump and other.encode() not in dump


def test_sighup_reloads_the_config_api_keys(mta_factory):
    mta = mta_factory('[tenants.acme]\napi_keys = ["old-key-0123456789"]\n')
    assert _inject(mta, "old-key-0123456789") == 202
    assert _inject(mta, "new-key-0123456789") == 401
    text = mta.config_path.read_text().replace('"old-key-0123456789"', '"new-key-0123456789"')
    mta.config_path.write_text(text)
    mta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _inject(mta, "new-key-0123456789") != 202 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _inject(mta, "new-key-0123456789") == 202
    assert _inject(mta, "old-key-0123456789") == 401
    # Config keys are listed (never shown) and cannot be revoked through the API.
    [rec] = json.loads(_ok(mta.cli("keys", "list", "--json")))
    assert rec["source"] == "config"
    proc = mta.cli("keys", "revoke", "acme", rec["id"])
    assert proc.returncode != 0 and "config_key" in proc.stderr
