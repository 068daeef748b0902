"""POST /api/v1/messages: HTTP injection through the ingest service, as SMTP uses it.

A tenant authenticates with an API key (`Authorization: Bearer <key>`). The request body
(mta.http.compose) becomes an envelope and a message, which then take the same stages as
SMTP (mta.ingress): `check_mail` with the request's `ApiClient` (tenant resolved from the
key), `check_rcpt` per recipient, and `submit` with the recipients policy accepted. 202
means the message is durable (the spool commit fsynced).

    202 {"id": "...", "recipients": [{"address": ..., "accepted": true, "reply": "250 ..."}]}
    4xx {"error": {"code": ..., "message": ...}} (codes are stable; see openapi.py)

Refusals keep the SMTP reply (in "reply"): a transient one is 429 (retry later), a
permanent one 422; a transient failure to store the message (spool full) is 503.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import secrets
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web

from mta.http import state
from mta.http.compose import ComposeError, Limits, Submission, compose
from mta.http.errors import ApiError
from mta.http.ratelimit import REQUEST_TENANT, bearer
from mta.ingress import NotQueued, Origin, queued_reply
from mta.queue.envelope import Envelope, Recipient
from mta.rfc5321.reply import Reply

if TYPE_CHECKING:
    from mta.policy.engine import PolicyTxn
    from mta.policy.kv import PolicyKV

__all__ = ["ApiClient", "ApiKeys", "IngressLike", "routes"]

routes = web.RouteTableDef()

# A JSON body is bigger than the message it carries: base64 attachments grow by 4/3, and
# JSON escapes add a little more; the message size itself is checked once built.
_JSON_OVERHEAD = 64 * 1024


class IngressLike(Protocol):
    """What injection needs of the ingest service (mta.ingress.Ingress). The policy
    hooks answer directly when they can, or with an awaitable when they must wait."""

    events: Any

    def check_mail(self, client: Any, address: str,
                   params: dict[str, str]) -> Reply | Awaitable[Reply | None] | None: ...
    def check_rcpt(self, client: Any, address: str,
                   params: dict[str, str]) -> Reply | Awaitable[Reply | None] | None: ...
    async def submit(self, envelope: Envelope, body: bytes, *, txn: Any = None,
                     origin: Origin = "smtp") -> str: ...
    def session_closed(self, client: Any) -> None: ...


@dataclass(slots=True)
class ApiClient:
    """One injection request as the ingest stages see it (an mta.ingress.Client)."""

    tenant: str
    client_ip: str
    transaction: PolicyTxn | None = None


async def _answer(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


class ApiKeys:
    """API key -> tenant: the config's `[tenants.X] api_keys` (replaced on SIGHUP) and the
    run-time keys of `mta keys create` (records in the policy store, so every node sees a
    new or revoked key at its next request: nothing is cached).

    Keys are held as SHA-256 digests, never as text: a lookup compares digests, so its
    timing says nothing about how much of a guessed key was right, and the store holds
    nothing a reader could use. A run-time key is 32 random bytes (256 bits), so a plain
    hash (no salt, no stretching) is as safe as a password hash would be and costs nothing
    per request. Record: kv namespace "api_keys", key = hex digest, value = JSON
    {"id", "tenant", "created", "label"}; the id (the digest's first 12 hex digits) is what
    `mta keys list` shows and `revoke` takes.
    """

    NS = "api_keys"
    PREFIX = "mta_"  # run-time keys look like mta_<43 base64url characters>

    def __init__(self, keys: Mapping[str, str] | None = None, kv: PolicyKV | None = None) -> None:
        self.kv = kv
        self._by_digest: dict[bytes, str] = {}
        self.reload(keys)

    def reload(self, keys: Mapping[str, str] | None) -> None:
        """The config's keys, as from now (SIGHUP): a removed key is refused at once."""
        self._by_digest = {self._digest(k): t for k, t in (keys or {}).items() if k}

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()

    async def tenant(self, key: str) -> str | None:
        if not key:
            return None
        digest = self._digest(key)
        found = self._by_digest.get(digest)
        if found is not None or self.kv is None or not key.startswith(self.PREFIX):
            return found
        raw = await self.kv.get(self.NS, digest.hex())
        return None if raw is None else str(json.loads(raw)["tenant"])

    async def create(self, tenant: str, label: str = "") -> tuple[str, dict[str, Any]]:
        """A new key for `tenant`: (the key, shown once; its record)."""
        if self.kv is None:
            raise RuntimeError("no policy store for run-time keys")
        key = self.PREFIX + secrets.token_urlsafe(32)
        digest = self._digest(key).hex()
        rec = {"id": digest[:12], "tenant": tenant, "created": round(time.time(), 3),
               "label": label}
        await self.kv.put(self.NS, digest, json.dumps(rec, sort_keys=True))
        return key, rec

    async def records(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Every key (of `tenant`), run-time and from the config, without the keys."""
        out = [{"id": d.hex()[:12], "tenant": t, "created": None, "label": "",
                "source": "config"} for d, t in self._by_digest.items()
               if tenant is None or t == tenant]
        if self.kv is not None:
            for raw in (await self.kv.items(self.NS)).values():
                rec = json.loads(raw)
                if tenant is None or rec["tenant"] == tenant:
                    out.append({**rec, "source": "runtime"})
        return sorted(out, key=lambda r: (r["tenant"], r["source"], r["id"]))

    async def revoke(self, tenant: str, key_id: str) -> dict[str, Any] | None:
        """Remove `tenant`'s run-time key `key_id` (an id or a longer digest prefix); the
        record removed, or None when there is none."""
        if self.kv is None or len(key_id) < 8:
            return None
        for digest, raw in (await self.kv.items(self.NS)).items():
            rec = json.loads(raw)
            if digest.startswith(key_id.lower()) and rec["tenant"] == tenant:
                await self.kv.delete(self.NS, digest)
                return dict(rec)
        return None

    def in_config(self, tenant: str, key_id: str) -> bool:
        return any(d.hex().startswith(key_id.lower()) and t == tenant
                   for d, t in self._by_digest.items())

    def __len__(self) -> int:
        return len(self._by_digest)


def _refused(reply: Reply, code: str, message: str) -> ApiError:
    status = 429 if reply.is_transient else 422
    return ApiError(status, code, f"{message}: {reply}", extra={"reply": str(reply)})


async def _read_body(request: web.Request, limit: int) -> bytes:
    if request.content_length is not None and request.content_length > limit:
        raise ApiError(413, "payload_too_large", f"the request body is over the limit "
                       f"of {limit} bytes (from [smtp] max_message_size)",
                       extra={"limit": limit})
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"the request body is over the limit "
                       f"of {limit} bytes (from [smtp] max_message_size)",
                       extra={"limit": limit})
        chunks.append(chunk)
    return b"".join(chunks)


async def _authenticate(request: web.Request) -> str:
    tenant = request.get(REQUEST_TENANT)  # found by the rate limit middleware
    if tenant is None:
        tenant = await request.app[state.API_KEYS].tenant(bearer(request))
    if tenant is None:
        raise ApiError(401, "unauthorized", "a valid API key is required "
                       "(Authorization: Bearer <key>)",
                       headers={"WWW-Authenticate": 'Bearer realm="mta"'})
    return tenant


@routes.post("/api/v1/messages")
async def inject(request: web.Request) -> web.Response:
    tenant = await _authenticate(request)
    ingress: IngressLike | None = request.app[state.INGRESS]
    if ingress is None:
        raise ApiError(503, "injection_unavailable", "this listener does not accept mail")
    if request.content_type != "application/json":
        raise ApiError(415, "unsupported_media_type", "the body must be application/json")
    limits: Limits = request.app[state.INJECT_LIMITS]
    body = await _read_body(request, limits.max_message_size * 4 // 3 + _JSON_OVERHEAD)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {e}") from None
    peer = request.transport.get_extra_info("peername") if request.transport else None
    client_ip = peer[0] if peer else ""
    events = ingress.events
    try:
        sub = compose(doc, limits=limits, client_ip=client_ip, tls=request.secure,
                      now=time.time())
    except ComposeError as e:
        if e.code == "message_too_large" and events is not None:
            events.emit("rejected", reason="size", tenant=tenant, client_ip=client_ip,
                        protocol="http", reply="552 5.3.4 " + e.message)
        raise ApiError(e.status, e.code, e.message) from None

    client = ApiClient(tenant, client_ip)
    try:
        return await _inject(request, ingress, client, sub)
    finally:
        # What policy reserved for a request that ends without submit (refused, failed,
        # or the client went away) is given back, as when an SMTP session closes.
        ingress.session_closed(client)


async def _inject(request: web.Request, ingress: IngressLike, client: ApiClient,
                  sub: Submission) -> web.Response:
    client_ip, tenant = client.client_ip, client.tenant
    events = ingress.events
    refusal = await _answer(ingress.check_mail(client, sub.mail_from, dict(sub.mail_params)))
    if refusal is not None:
        if events is not None:
            events.emit("rejected", reason="policy_mail", tenant=tenant, client_ip=client_ip,
                        protocol="http", sender=sub.mail_from, reply=str(refusal))
        raise _refused(refusal, "sender_refused", "the sender was refused")
    results: list[dict[str, Any]] = []
    accepted: list[Recipient] = []
    refusals: list[Reply] = []
    for address in sub.recipients:
        orcpt = sub.orcpt.get(address)
        rcpt_params = {"NOTIFY": sub.notify} if sub.notify else {}
        if orcpt:
            rcpt_params["ORCPT"] = orcpt
        reply = await _answer(ingress.check_rcpt(client, address, rcpt_params))
        if reply is None:
            accepted.append(Recipient(address, notify=sub.notify, orcpt=orcpt))
            results.append({"address": address, "accepted": True})
        else:
            if events is not None:
                events.emit("rejected", reason="policy_rcpt", tenant=tenant,
                            client_ip=client_ip, protocol="http", recipient=address,
                            reply=str(reply))
            refusals.append(reply)
            results.append({"address": address, "accepted": False, "reply": str(reply)})
    if not accepted:
        # Every refusal temporary (no credit left, a quota full): retry later, like 4xx.
        status = 429 if all(r.is_transient for r in refusals) else 422
        raise ApiError(status, "no_recipients_accepted", "every recipient was refused",
                       extra={"recipients": results})

    envelope = Envelope(tenant=tenant, mail_from=sub.mail_from, recipients=accepted,
                        client_ip=client_ip, helo="http", mail_params=sub.mail_params,
                        received_at=time.time())
    started = time.perf_counter()
    txn, client.transaction = client.transaction, None  # submit commits or aborts it
    msg_id: str | None = None
    try:
        msg_id = await ingress.submit(envelope, sub.data, txn=txn, origin="http")
        reply = queued_reply(msg_id)
    except NotQueued as e:
        reply = e.reply
        if not reply.is_positive:
            status = 503 if reply.is_transient else 422
            raise ApiError(status, "message_refused", f"the message was not queued: {reply}",
                           extra={"reply": str(reply)}) from None
        # else every recipient was a duplicate: accepted as SMTP does (250), nothing queued
    metrics = request.app[state.METRICS]
    if metrics is not None:
        metrics.observe_ingest(time.perf_counter() - started, "http")
    for r in results:
        if r["accepted"]:
            r["reply"] = str(reply)
    return web.json_response({"id": msg_id, "recipients": results}, status=202)
