"""The in-memory delivery schedule: ready queues and the retry heap. No I/O.

Work is a `WorkItem`: one message and some of its recipients' indexes, bound for one site
on behalf of one tenant. Ready items wait in a FIFO per (tenant, site) until the dispatcher
`take`s them; deferred items wait in one heap ordered by retry time until `due_by_key(now)` moves
them back to their ready queue. Every operation is O(1) or O(log n) per item: nothing scans
a queue or the heap.

`cancel(msg_id)` (hold, delete) is lazy: stale items stay where they are and are dropped
when they reach the front, so ready counts can include them until then. A message
re-enqueued after a cancel (release) gets fresh items that the old cancel does not touch.

The spool is the truth; this is a schedule rebuilt from it at start-up (`restore`).
"""

from __future__ import annotations

import collections
import heapq
import itertools
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, replace

from mta.queue.records import PendingRecipient

__all__ = ["QueueKey", "Scheduler", "WorkItem"]

QueueKey = tuple[str, str]  # (tenant, site)


@dataclass(frozen=True, slots=True)
class WorkItem:
    msg_id: str
    indexes: tuple[int, ...]  # recipient indexes in the message, all for one site
    tenant: str = "default"
    site: str = ""
    pool: str = ""  # egress pool decided at acceptance (Envelope.pool); "": from the tenant
    parents: tuple[str, ...] = ()  # the tenant's ancestors at acceptance (Envelope.parents)

    @property
    def key(self) -> QueueKey:
        return (self.tenant, self.site)


class Scheduler:
    def __init__(self) -> None:
        self._ready: dict[QueueKey, collections.deque[tuple[int, WorkItem]]] = {}
        self._heap: list[tuple[float, int, WorkItem]] = []
        self._seq = itertools.count()
        # msg_id -> seq of its last cancel; items with seq below it are stale. Entries live
        # only while the message still has items here (tracked by _live).
        self._cancelled: dict[str, int] = {}
        self._live: collections.Counter[str] = collections.Counter()
        self._ready_total = 0

    # --- adding work ---------------------------------------------------------------------

    def enqueue(self, item: WorkItem, site: str | None = None,
                tenant: str | None = None) -> QueueKey:
        """Make `item` ready now, in the queue of (tenant, site); returns that key."""
        if site is not None or tenant is not None:
            item = replace(item, site=item.site if site is None else site,
                           tenant=item.tenant if tenant is None else tenant)
        self._push_ready(next(self._seq), item)
        self._live[item.msg_id] += 1
        return item.key

    def defer(self, item: WorkItem, at: float) -> None:
        """Keep `item` until `at` (unix time); `due()` then moves it to its ready queue."""
        heapq.heappush(self._heap, (at, next(self._seq), item))
        self._live[item.msg_id] += 1

    def restore(self, pending: Iterable[PendingRecipient], now: float,
                site_for: Callable[[PendingRecipient], str] | None = None) -> int:
        """Schedule recipients streamed from `Spool.iter_pending` (ordered by message).

        Consecutive recipients of one message with the same site and retry time become one
        item; those due by `now` are ready, the others deferred. `site_for` names the site
        of a recipient whose site is not known yet (default: its domain, for the
        dispatcher to resolve). Returns the number of items created.
        """
        # One pass, no call per recipient: a restart with a million queued recipients
        # spends its time here before the daemon listens (bench/queue_large.py).
        items: list[tuple[float, WorkItem]] = []
        key: tuple[str, str, float] | None = None
        head: PendingRecipient | None = None
        indexes: list[int] = []
        for p in pending:
            site = p.site or (site_for(p) if site_for else p.address.rpartition("@")[2].lower())
            k = (p.msg_id, site, p.next_attempt if p.next_attempt > now else 0.0)
            if k == key:
                indexes.append(p.index)
                continue
            if head is not None and key is not None:
                items.append((key[2], WorkItem(head.msg_id, tuple(indexes), head.tenant,
                                               key[1], head.pool, head.parents)))
            key, head, indexes = k, p, [p.index]
        if head is not None and key is not None:
            items.append((key[2], WorkItem(head.msg_id, tuple(indexes), head.tenant, key[1],
                                           head.pool, head.parents)))
        heap, seq, live = self._heap, self._seq, self._live
        for at, item in items:
            if at > now:
                heapq.heappush(heap, (at, next(seq), item))
            else:
                self._push_ready(next(seq), item)
            live[item.msg_id] = live.get(item.msg_id, 0) + 1  # Counter's += calls __missing__
        return len(items)

    # --- moving and taking work ----------------------------------------------------------

    def due_by_key(self, now: float) -> collections.Counter[QueueKey]:
        """Move every deferred item whose time has come to its ready queue, and say which
        queues got how many, so the dispatcher wakes only the sites concerned instead of
        walking every ready queue."""
        moved: collections.Counter[QueueKey] = collections.Counter()
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, seq, item = heapq.heappop(heap)
            if self._is_stale(seq, item):
                self._forget(item.msg_id)
                continue
            self._push_ready(next(self._seq), item)
            moved[item.key] += 1
        return moved

    def take(self, key: QueueKey, n: int) -> list[WorkItem]:
        """Up to `n` ready items of one queue, oldest first."""
        q = self._ready.get(key)
        out: list[WorkItem] = []
        while q and len(out) < n:
            seq, item = q.popleft()
            self._ready_total -= 1
            if not self._is_stale(seq, item):
                out.append(item)
            self._forget(item.msg_id)  # after the check: it may clear the cancel mark
        if q is not None and not q:
            del self._ready[key]
        return out

    def flush(self, msg_id: str | None = None,
              items: Collection[WorkItem] | None = None) -> int:
        """Make deferred items ready now (`mta queue flush [ID]`), only those of `msg_id`
        or only `items` if given; returns how many moved. An operator command (or a lifted
        suspension), so one pass over the heap is fine here."""
        keep: list[tuple[float, int, WorkItem]] = []
        moved = 0
        for at, seq, item in self._heap:
            if ((msg_id is not None and item.msg_id != msg_id)
                    or (items is not None and item not in items)):
                keep.append((at, seq, item))
            elif self._is_stale(seq, item):
                self._forget(item.msg_id)
            else:
                self._push_ready(next(self._seq), item)
                moved += 1
        heapq.heapify(keep)
        self._heap = keep
        return moved

    def cancel(self, msg_id: str) -> None:
        """Drop every item of `msg_id` now in the schedule (lazily, see module doc)."""
        if self._live[msg_id] > 0:
            self._cancelled[msg_id] = next(self._seq)
        else:
            self._live.pop(msg_id, None)

    # --- looking -------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the earliest deferred item is due, or None if nothing is deferred."""
        heap = self._heap
        while heap and self._is_stale(heap[0][1], heap[0][2]):
            _, _, item = heapq.heappop(heap)
            self._forget(item.msg_id)
        return heap[0][0] if heap else None

    def ready_keys(self) -> list[QueueKey]:
        """Queues that have ready items (only those: empty queues are dropped)."""
        return list(self._ready)

    def counts(self) -> dict[QueueKey, int]:
        """Ready items per queue (may include cancelled items not yet dropped)."""
        return {k: len(q) for k, q in self._ready.items()}

    @property
    def ready_total(self) -> int:
        return self._ready_total

    @property
    def deferred_total(self) -> int:
        return len(self._heap)

    # --- internals -----------------------------------------------------------------------

    def _push_ready(self, seq: int, item: WorkItem) -> None:
        q = self._ready.get(item.key)
        if q is None:
            q = self._ready[item.key] = collections.deque()
        q.append((seq, item))
        self._ready_total += 1

    def _is_stale(self, seq: int, item: WorkItem) -> bool:
        cancelled = self._cancelled.get(item.msg_id)
        return cancelled is not None and seq < cancelled

    def _forget(self, msg_id: str) -> None:
        """One item of msg_id left the schedule."""
        self._live[msg_id] -= 1
        if self._live[msg_id] <= 0:
            del self._live[msg_id]
            self._cancelled.pop(msg_id, None)
