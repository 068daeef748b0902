"""One admin API over every worker's shard (`[server] workers` > 1, mta.supervisor).

Worker 0 answers the admin API and /metrics for the whole daemon. `ShardedQueueOps` is
its QueueOps: an operation on one message goes to the worker whose shard holds it (the
last two hex digits of a queue id name the shard), a listing is merged in id order from
every worker, counts are summed. `merged_metrics` adds a `worker` label to each worker's
series and serves them as one exposition (`MergedMetrics`, worker 0's /metrics). The other
workers are reached over their own admin sockets (`SPOOL/admin-NN.sock`), which only the
service user can open.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from mta.observe.metrics import Metrics

__all__ = ["PEERS", "MergedMetrics", "ShardedQueueOps", "ask_peers", "forward",
           "merged_metrics", "shard_of", "worker_socket"]


# Worker 0's app: shard -> the other workers' admin sockets (absent with one worker).
PEERS: web.AppKey[dict[int, str]] = web.AppKey("peers", dict)

_TIMEOUT = aiohttp.ClientTimeout(total=30)


def shard_of(msg_id: str) -> int | None:
    try:
        return int(msg_id[-2:], 16)
    except ValueError:
        return None


def worker_socket(spool_dir: Any, shard: int) -> str:
    return str(spool_dir / f"admin-{shard:02d}.sock")


class _Peer:
    def __init__(self, path: str) -> None:
        self.path = path

    async def call(self, method: str, path: str, params: Mapping[str, Any] | None = None,
                   body: Any = None) -> tuple[int, Any]:
        conn = aiohttp.UnixConnector(path=self.path)
        async with aiohttp.ClientSession(connector=conn, timeout=_TIMEOUT) as s, \
                s.request(method, "http://worker" + path, json=body,
                          params={k: str(v) for k, v in (params or {}).items()
                                  if v is not None}) as resp:
            body = await resp.read()
            ctype = resp.headers.get("Content-Type", "")
            return resp.status, json.loads(body) if "json" in ctype else body.decode()


async def ask_peers(peers: Mapping[int, str] | None, method: str, path: str,
                    params: Mapping[str, Any] | None = None, body: Any = None) -> list[Any]:
    """The same request to every other worker; the documents of those that answered 200
    (one that is restarting is left out: its part is missing, not an error)."""
    if not peers:
        return []
    answers = await asyncio.gather(*(_Peer(p).call(method, path, params, body)
                                     for p in peers.values()), return_exceptions=True)
    return [a[1] for a in answers if not isinstance(a, BaseException) and a[0] == 200]


class ShardedQueueOps:
    def __init__(self, local: Any, shard: int, peers: Mapping[int, str]) -> None:
        self.local, self.shard = local, shard
        self.peers = {i: _Peer(p) for i, p in peers.items()}

    def _owner(self, msg_id: str) -> _Peer | None:
        s = shard_of(msg_id)
        return None if s is None or s == self.shard else self.peers.get(s)

    async def _one(self, msg_id: str, method: str, tail: str, local: Any) -> Any:
        peer = self._owner(msg_id)
        if peer is None:
            return await local(msg_id)
        status, doc = await peer.call(method, f"/api/v1/admin/queue/{msg_id}{tail}")
        return None if status == 404 else doc

    async def queue_list(self, state: str | None, limit: int, after: str | None, *,
                         tenant: str | None = None, site: str | None = None) -> list[dict]:
        parts = [self.local.queue_list(state, limit, after, tenant=tenant, site=site)] + [
            self._peer_list(p, state, limit, after, tenant, site) for p in self.peers.values()]
        lists = await asyncio.gather(*parts)
        return list(heapq.merge(*lists, key=lambda m: m["id"]))[:limit]

    async def _peer_list(self, peer: _Peer, state: str | None, limit: int,
                         after: str | None, tenant: str | None = None,
                         site: str | None = None) -> list[dict]:
        status, doc = await peer.call("GET", "/api/v1/admin/queue",
                                      {"state": state, "limit": limit, "after": after,
                                       "tenant": tenant, "site": site})
        return list(doc["messages"]) if status == 200 else []

    async def queue_show(self, msg_id: str) -> dict | None:
        return await self._one(msg_id, "GET", "", self.local.queue_show)

    async def queue_explain(self, msg_id: str) -> dict | None:
        return await self._one(msg_id, "GET", "/explain", self.local.queue_explain)

    async def _action(self, msg_id: str, action: str, local: Any) -> bool:
        peer = self._owner(msg_id)
        if peer is None:
            return bool(await local(msg_id))
        method = "DELETE" if action == "delete" else "POST"
        tail = "" if action == "delete" else f"/{action}"
        status, _ = await peer.call(method, f"/api/v1/admin/queue/{msg_id}{tail}")
        return status == 200

    async def queue_hold(self, msg_id: str) -> bool:
        return await self._action(msg_id, "hold", self.local.queue_hold)

    async def queue_release(self, msg_id: str) -> bool:
        return await self._action(msg_id, "release", self.local.queue_release)

    async def queue_delete(self, msg_id: str) -> bool:
        return await self._action(msg_id, "delete", self.local.queue_delete)

    async def queue_bounce(self, msg_id: str) -> bool:
        return await self._action(msg_id, "bounce", self.local.queue_bounce)

    async def queue_flush(self, msg_id: str | None) -> int:
        if msg_id is not None:
            peer = self._owner(msg_id)
            if peer is not None:
                status, doc = await peer.call("POST", f"/api/v1/admin/queue/{msg_id}/flush")
                return int(doc.get("recipients", 0)) if status == 200 else -1
            return await self.local.queue_flush(msg_id)
        total = await self.local.queue_flush(None)
        for peer in self.peers.values():
            status, doc = await peer.call("POST", "/api/v1/admin/queue/flush")
            total += int(doc.get("recipients", 0)) if status == 200 else 0
        return total

    async def queue_stats(self) -> dict[str, Any]:
        out = await self.local.queue_stats()
        for peer in self.peers.values():
            status, doc = await peer.call("GET", "/api/v1/admin/queue-stats")
            if status == 200:
                out = _sum(out, doc)
        return out


    async def queue_shape(self, edges: list[float], tenant: str | None) -> list[list]:
        rows = await self.local.queue_shape(edges, tenant)
        query = "edges=" + ",".join(f"{e:g}" for e in edges)
        if tenant is not None:
            query += "&tenant=" + urllib.parse.quote(tenant, safe="")
        for peer in self.peers.values():
            status, doc = await peer.call("GET", f"/api/v1/admin/queue-shape?{query}")
            if status == 200:
                rows.extend(doc.get("rows", []))
        return rows


async def forward(peers: Mapping[int, str], method: str, path: str, body: Any) -> None:
    """The same admin request to every other worker (a switch that holds for the daemon,
    like `mta drain`). A worker that does not answer is logged, not fatal."""
    import logging

    for i, p in peers.items():
        try:
            status, _ = await _Peer(p).call(method, path, body=body)
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            logging.getLogger("mta").error("worker %d did not take %s %s: %s", i, method,
                                           path, e)
            continue
        if status >= 300:
            logging.getLogger("mta").error("worker %d answered %d to %s %s", i, status,
                                           method, path)


def _sum(a: Any, b: Any) -> Any:
    """Counts added key by key (nested dicts); other values: the first's."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _sum(a.get(k), b.get(k)) if k in a and k in b else a.get(k, b.get(k))
                for k in {**a, **b}}
    if isinstance(a, int | float) and isinstance(b, int | float) and \
            not isinstance(a, bool):
        return a + b
    return a


async def merged_metrics(own: str, shard: int, peers: Mapping[int, str]) -> str:
    """Every worker's exposition as one, each series labelled with its `worker`."""
    from prometheus_client.parser import text_string_to_metric_families

    texts = {shard: own}
    for i, path in peers.items():
        try:
            status, text = await _Peer(path).call("GET", "/metrics")
        except (TimeoutError, aiohttp.ClientError, OSError):
            continue  # a worker restarting: its series are missing from this scrape
        if status == 200 and isinstance(text, str):
            texts[i] = text
    families: dict[str, tuple[str, str, list[str]]] = {}
    for worker, text in sorted(texts.items()):
        for fam in text_string_to_metric_families(text):
            entry = families.setdefault(fam.name, (fam.type, fam.documentation, []))
            for smp in fam.samples:
                labels = {**smp.labels, "worker": str(worker)}
                rendered = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
                entry[2].append(f"{smp.name}{{{rendered}}} {_number(smp.value)}")
    out = []
    for name, (kind, doc, lines) in families.items():
        out.append(f"# HELP {name} {doc}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)
    return "\n".join(out) + "\n"


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if not float(v).is_integer() else f"{v:.1f}"


class MergedMetrics:
    """Worker 0's /metrics: its own and every other worker's series (merged_metrics)."""

    def __init__(self, metrics: Metrics, shard: int, peers: dict[int, str]) -> None:
        self._m, self._shard, self._peers = metrics, shard, peers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._m, name)

    async def render(self) -> bytes:
        own = (await self._m.render()).decode()
        return (await merged_metrics(own, self._shard, self._peers)).encode()
