"""POST /api/v1/messages in process: the real spool, dispatcher, ingress and queue
operations behind the real aiohttp app on a loopback port; the queue seen through the
same admin client `mta queue list` uses. Policy refusals come from an Ingress whose
check_mail/check_rcpt answer like a policy engine would (its documented plug-in point)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web

from mta.config import parse_config
from mta.delivery.dispatcher import Dispatcher
from mta.delivery.operations import QueueOperations
from mta.http.app import Limits, make_app
from mta.http.client import AdminClient
from mta.ingress import Ingress
from mta.observe.events import EventLog
from mta.observe.metrics import Metrics
from mta.queue import Spool
from mta.rfc5321.reply import Reply
from tests.support.daemon import free_port

KEY = "k-acme-0123456789"
ADMIN = "admin-token"
RAW = {"raw": "From: a@s.test\r\nSubject: hi\r\n\r\nhello\r\n", "from": "a@s.test",
       "to": ["b@d.test", "c@d.test"]}


class PolicyIngress(Ingress):
    """Refuses like the policy engine: permanent for some recipients, transient senders."""

    async def check_mail(self, session, address, params):
        assert session.tenant == "acme"  # resolved from the API key
        if address == "slow@s.test":
            return Reply(451, "4.7.1", "Rate limit reached, try later")
        if address == "banned@s.test":
            return Reply(550, "5.7.1", "Sender suspended")
        return None

    async def check_rcpt(self, session, address, params):
        if address.startswith("suppressed@"):
            return Reply(550, "5.7.1", "Recipient suppressed")
        return None


@dataclass
class Api:
    url: str
    spool: Spool
    events: EventLog
    metrics: Metrics
    admin: AdminClient

    async def post(self, body: object, *, key: str | None = KEY, raw: bytes | None = None,
                   content_type: str = "application/json") -> tuple[int, dict]:
        headers = {"Content-Type": content_type}
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else json.dumps(body).encode()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s, \
                s.post(self.url + "/api/v1/messages", data=data, headers=headers) as r:
            return r.status, await r.json()


@contextlib.asynccontextmanager
async def running(tmp_path, *, max_message_size: int = 200_000):
    cfg = parse_config(f'[dns]\nnameservers = ["127.0.0.1:{free_port()}"]\ntimeout = "1s"\n'
                       '[delivery]\nretry = ["1h"]\n', base=tmp_path)
    events = EventLog(None, keep_recent=1000)
    metrics = Metrics(tenants=["default", "acme"])
    metrics.attach(events)
    spool = await Spool.open(tmp_path / "spool")
    dispatcher = Dispatcher(cfg, spool=spool, events=events)
    ingress = PolicyIngress(spool=spool, events=events, on_accepted=dispatcher.accepted)
    await dispatcher.start()
    app = make_app(admin_token=ADMIN, queue_ops=QueueOperations(spool, dispatcher),
                   ingress=ingress, metrics=metrics, api_keys={KEY: "acme"},
                   limits=Limits(max_message_size, 5, "mta.test"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        yield Api(url, spool, events, metrics, AdminClient(url, ADMIN, timeout=10))
    finally:
        await runner.cleanup()
        await dispatcher.stop(1.0)
        await spool.close()


@pytest.fixture
async def api(tmp_path):
    async with running(tmp_path) as a:
        yield a


async def test_raw_message_is_queued_202_and_listed_by_the_admin_api(api):
    status, body = await api.post(RAW)
    assert status == 202, body
    msg_id = body["id"]
    assert [(r["address"], r["accepted"]) for r in body["recipients"]] == [
        ("b@d.test", True), ("c@d.test", True)]
    assert body["recipients"][0]["reply"].startswith("250 2.0.0")
    listing = (await asyncio.to_thread(api.admin.queue_list))["messages"]
    [m] = [m for m in listing if m["id"] == msg_id]
    assert m["tenant"] == "acme" and m["mail_from"] == "a@s.test"
    assert [r["address"] for r in m["recipients"]] == ["b@d.test", "c@d.test"]
    data = await api.spool.read_body(msg_id)
    assert data.startswith(b"Received: from [127.0.0.1]") and b"Message-ID:" in data
    received = [e for e in api.events.recent if e["event"] == "received"]
    assert {e["tenant"] for e in received} == {"acme"} and len(received) == 2


async def test_described_message_with_attachment_is_queued(api):
    status, body = await api.post({
        "from": "Ann <a@s.test>", "to": "b@d.test", "bcc": ["hidden@d.test"],
        "subject": "report", "text": "see attached",
        "attachments": [{"filename": "r.csv", "content_type": "text/csv",
                         "content_base64": base64.b64encode(b"a,b\n1,2\n").decode()}]})
    assert status == 202, body
    info = await api.spool.get(body["id"])
    assert [r.address for r in info.recipients] == ["b@d.test", "hidden@d.test"]
    data = await api.spool.read_body(body["id"])
    assert b"hidden@d.test" not in data and b"r.csv" in data


async def test_refused_recipients_are_listed_and_the_rest_queued(api):
    status, body = await api.post({**RAW, "to": ["suppressed@d.test", "ok@d.test"]})
    assert status == 202
    assert body["recipients"][0] == {"address": "suppressed@d.test", "accepted": False,
                                     "reply": "550 5.7.1 Recipient suppressed"}
    assert body["recipients"][1]["accepted"] is True
    info = await api.spool.get(body["id"])
    assert [r.address for r in info.recipients] == ["ok@d.test"]
    [rej] = [e for e in api.events.recent if e["event"] == "rejected"]
    assert (rej["reason"], rej["tenant"], rej["protocol"]) == ("policy_rcpt", "acme", "http")


async def test_every_recipient_refused_is_422_with_the_replies(api):
    status, body = await api.post({**RAW, "to": ["suppressed@d.test"]})
    assert status == 422
    assert body["error"]["code"] == "no_recipients_accepted"
    assert body["error"]["recipients"][0]["reply"] == "550 5.7.1 Recipient suppressed"


@pytest.mark.parametrize(("sender", "status"), [("slow@s.test", 429), ("banned@s.test", 422)])
async def test_refused_sender_transient_429_permanent_422(api, sender, status):
    got, body = await api.post({**RAW, "from": sender})
    assert got == status
    assert body["error"]["code"] == "sender_refused"
    assert body["error"]["reply"][:3] == ("451" if status == 429 else "550")


@pytest.mark.parametrize("key", [None, "", "wrong-key", KEY + "x"])
async def test_without_a_valid_api_key_401(api, key):
    status, body = await api.post(RAW, key=key)
    assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_the_admin_token_is_not_an_api_key(api):
    status, _ = await api.post(RAW, key=ADMIN)
    assert status == 401


@pytest.mark.parametrize(("raw", "ctype", "status", "code"), [
    (b"{not json", "application/json", 400, "bad_json"),
    (b"\xff\xfe", "application/json", 400, "bad_json"),
    (b"[]", "application/json", 400, "bad_request"),
    (b'{"from": "a@s.test"}', "application/json", 400, "missing_field"),
    (b'{"from": "nope", "to": "b@d.test"}', "application/json", 400, "bad_address"),
    (b"raw=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
])
async def test_bad_requests_have_stable_codes_never_500(api, raw, ctype, status, code):
    got, body = await api.post(None, raw=raw, content_type=ctype)
    assert (got, body["error"]["code"]) == (status, code), body


async def test_oversized_message_413_and_oversized_body_413(tmp_path):
    async with running(tmp_path, max_message_size=4_000) as api:
        status, body = await api.post({**RAW, "raw": "Subject: x\r\n\r\n" + "y" * 5_000})
        assert (status, body["error"]["code"]) == (413, "message_too_large")
        # The request body itself is bounded (4/3 of the size for base64, + 64 KiB).
        status, body = await api.post(None, raw=b'{"raw": "' + b"z" * 200_000 + b'"}')
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        [rej] = [e for e in api.events.recent if e["event"] == "rejected"]
        assert rej["reason"] == "size"


async def test_injection_latency_is_observed(api):
    await api.post(RAW)
    text = (await api.metrics.render()).decode()
    assert 'mta_ingest_latency_seconds_count{protocol="http"} 1.0' in text
    assert 'mta_recipients_received_total{tenant="acme"} 2.0' in text


async def test_parts_not_wired_answer_503():
    app = make_app(admin_token=ADMIN)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    auth = {"Authorization": f"Bearer {ADMIN}"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
            for method, path, code in (
                    ("GET", "/metrics", "metrics_unavailable"),
                    ("GET", "/api/v1/admin/queue", "queue_unavailable"),
                    ("GET", "/api/v1/admin/tenants", "policy_unavailable")):
                async with s.request(method, f"http://127.0.0.1:{port}{path}",
                                     headers=auth) as r:
                    assert r.status == 503
                    assert (await r.json())["error"]["code"] == code
    finally:
        await runner.cleanup()


async def test_dsn_requests_ride_with_the_message_as_over_smtp(api):
    status, body = await api.post({**RAW, "dsn": {"notify": ["SUCCESS", "failure"],
                                                  "ret": "hdrs", "envid": "order 42+x"}})
    assert status == 202, body
    info = await api.spool.get(body["id"])
    assert {r.notify for r in info.recipients} == {"SUCCESS,FAILURE"}
    # Kept as SMTP would have received them: RET upper-cased, ENVID as xtext.
    assert info.mail_params["RET"] == "HDRS" and info.mail_params["ENVID"] == "order+2042+2Bx"
    for bad in ({"notify": "NEVER,SUCCESS"}, {"notify": "SOMETIMES"}, {"ret": "ALL"},
                {"envid": "x" * 101}, {"envid": "é"}, {"colour": "red"}, "SUCCESS",
                {"orcpt": "bob@example.net"}, {"orcpt": {"nobody@x.test": "a@b"}},
                {"orcpt": {RAW["to"][0]: "not an address"}},
                {"orcpt": {RAW["to"][0]: "é@x.test"}},
                {"orcpt": {RAW["to"][0]: "a@" + "b" * 500}}):
        status, err = await api.post({**RAW, "dsn": bad})
        assert status == 400 and err["error"]["code"] == "bad_field", (bad, err)


async def test_orcpt_rides_per_recipient_as_rcpt_to_would_carry_it(api):
    first, second = RAW["to"][0], RAW["to"][1]
    status, body = await api.post({**RAW, "dsn": {"orcpt": {first.upper(): "list+a@orig.test"}}})
    assert status == 202, body
    info = await api.spool.get(body["id"])
    by_address = {r.address: r.orcpt for r in info.recipients}
    # xtext as an SMTP client would send ORCPT=rfc822;list+2Ba@orig.test; the other has none.
    assert by_address == {first: "rfc822;list+2Ba@orig.test", second: None}
