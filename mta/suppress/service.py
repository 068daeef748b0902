"""`Suppressions`: the suppression lists of every scope, checked at RCPT before policy
charges anything, and filled by operators, imports and the feedback events.

At RCPT (`screen_rcpt`, called by mta.ingress for SMTP and HTTP alike) the recipient and its
"@domain" are looked up in the sender's tenant, each of its ancestors (a sub-account inherits
its parents' lists) and the global list, nearest first. A hit is answered `550 5.7.1` naming
the list and the reason, or with `[suppression] action = "drop"` `250` and the recipient is
taken out of the envelope before it is queued (`take_dropped`); either way policy is never
asked, so nothing is reserved, charged or counted (quotas, unique recipients, licence), and
a `suppressed` event says which list and why. A failed lookup defers (451), as policy does.

Automatic entries come from the events stream (`listen`): `bounced` of category
invalid_recipient (a hard bounce; after [suppression] hard_bounce_count of them within
hard_bounce_window), `complained` and `unsubscribed`, each in the tenant's own scope. The
listener only schedules the write as a task: `EventLog.emit` never waits for a store.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from mta.config import Config
from mta.config.suppression import SuppressionConfig
from mta.observe.events import EventLog
from mta.rfc5321.reply import Reply
from mta.suppress.bloom import Bloom
from mta.suppress.entry import GLOBAL, REASONS, Entry, candidates, normalise_target

if TYPE_CHECKING:
    from mta.policy.clock import Clock
    from mta.policy.engine import PolicyTxn

__all__ = ["Suppressions"]

log = logging.getLogger("mta.suppress")

R_DROPPED = Reply(250, "2.1.5", "Ok")  # as any accepted recipient: the sender learns nothing
R_UNAVAILABLE = Reply(451, "4.3.0", "Suppression list lookup failed, try again later")

# Events that add an entry, and the reason they give it.
_KINDS = {"bounced": "hard_bounce", "complained": "complaint", "unsubscribed": "unsubscribe"}
_MAX_PAGE = 10_000
_BLOOM_MIN = 1 << 20  # entries the filter holds before it grows (1.25 MB)
_LEARN_SLICE = 5_000
_FOLLOW_BLOCK = 5.0  # seconds one read of the additions log waits (below the socket timeout)
_FOLLOW_RETRY = 1.0

Answer = Reply | Awaitable[Reply | None] | None


class _HasAddress(Protocol):
    address: str


R = TypeVar("R", bound=_HasAddress)


class Backend(Protocol):
    shared: bool

    async def scopes(self) -> set[str]: ...
    async def find(self, scopes: Sequence[str], targets: Sequence[str],
                   now: float) -> list[Entry]: ...
    async def upsert(self, entries: Sequence[Entry], replace: bool = True) -> int: ...
    async def remove(self, scope: str, address: str) -> bool: ...
    async def page(self, scope: str | None, after: tuple[str, str] | None, limit: int,
                   now: float) -> list[Entry]: ...
    async def strike(self, scope: str, address: str, now: float, window: float) -> int: ...
    async def prune(self, now: float) -> int: ...
    async def aclose(self) -> None: ...


def refusal(entry: Entry) -> Reply:
    """RCPT's 550 for a suppressed recipient: which list, and why."""
    return Reply(550, "5.7.1", f'Recipient suppressed: list "{entry.scope}", reason '
                 f"{entry.reason}")


def _cursor(entry: Entry) -> str:
    return f"{entry.scope}/{entry.address}"  # a scope has no "/"


def parse_cursor(text: str | None) -> tuple[str, str] | None:
    """A listing's `next` back into where to continue; ValueError if it is not one."""
    if not text:
        return None
    scope, sep, address = text.partition("/")
    if not sep:
        raise ValueError("not a cursor from a previous page")
    return scope, address


class Suppressions:
    def __init__(self, backend: Backend, cfg: SuppressionConfig, clock: Clock,
                 events: EventLog | None = None) -> None:
        self.backend = backend
        self.cfg = cfg
        self.clock = clock
        self.events = events
        # Scopes that have entries, when this process writes every entry (SQLite): a
        # tenant with none of its chain in it passes RCPT without a lookup. None: look.
        self._known: set[str] | None = None
        # Every address on any list, likewise (None: look): most recipients are on none.
        self._bloom: Bloom | None = None
        self._pending: builtins.list[str] | None = None  # added while a larger one is built
        self._growing: asyncio.Task[None] | None = None
        self._inflight: dict[int, builtins.list[str]] = {}  # learnt, not yet written
        self._seq = 0
        self._dropped: weakref.WeakKeyDictionary[PolicyTxn, set[str]] = (
            weakref.WeakKeyDictionary())
        self._tasks: set[asyncio.Task[Any]] = set()
        # A backend others write too (Redis): where this node has read its additions log.
        self._log_at: tuple[str, int] = ("0-0", 0)
        self._follower: asyncio.Task[None] | None = None
        self._closing = False
        # Address -> its keyed hash once an address was erased (mta.gdpr): RCPT looks the
        # hash up beside the address and its domain. None: no erased address to look for.
        self.hasher: Callable[[str], str] | None = None

    @classmethod
    async def open(cls, cfg: Config, state_dir: str | Path, *, clock: Clock,
                   events: EventLog | None = None) -> Suppressions:
        """The lists beside the policy store: in the cluster's Redis with [cluster]
        redis_url, else in state_dir/policy.db (which PolicyEngine.open made first)."""
        backend: Backend
        if cfg.cluster.redis_url:
            from mta.suppress.redis import RedisBackend

            backend = await RedisBackend.open(cfg.cluster.redis_url)
        else:
            from mta.suppress.sqlite import SqliteBackend

            backend = await SqliteBackend.open(Path(state_dir) / "policy.db")
        s = cls(backend, cfg.suppression, clock, events)
        if not backend.shared:
            s._known = await backend.scopes()
            s._bloom = await s._filled()
        elif hasattr(backend, "additions"):  # others write too, and log what they add
            await s._refill()
            s._follower = asyncio.get_running_loop().create_task(s._follow())
        return s

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg.suppression

    async def aclose(self) -> None:
        if self._follower is not None:
            self._closing = True  # redis-py may turn the cancellation into an error
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
        if self._growing is not None:
            await asyncio.gather(self._growing, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(list(self._tasks))
        await self.backend.aclose()

    # --- the filter of a shared backend ---------------------------------------------------
    async def _refill(self) -> None:
        """The filter from the lists themselves, and where their additions log stands:
        what is added meanwhile is read again from there. Until it is built every RCPT
        is looked up."""
        self._bloom = None
        at = await self.backend.position()  # type: ignore[attr-defined]
        bloom = await self._filled()
        self._log_at, self._bloom = at, bloom

    async def _filled(self) -> Bloom:
        """A new filter of every address on the lists, with room to grow."""
        b: Any = self.backend
        bloom = Bloom(max(2 * await b.count(), _BLOOM_MIN))
        await b.fill(bloom)
        return bloom

    async def _follow(self) -> None:
        """The adds of every node (and worker) into this one's filter, as they are made:
        a recipient on no list passes RCPT without a round trip, and one just added
        anywhere is looked up from the next read of the log (milliseconds)."""
        b: Any = self.backend
        while not self._closing:
            try:
                if self._bloom is None:
                    await self._refill()
                for at, seq, addresses in await b.additions(self._log_at[0], _FOLLOW_BLOCK):
                    if seq != self._log_at[1] + 1:
                        log.info("suppression: the additions log went from %d to %d; "
                                 "filling the address filter again", self._log_at[1], seq)
                        self._bloom = None
                        break
                    if addresses and self._bloom is not None:
                        self._learn(addresses)
                    self._log_at = (at, seq)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._closing:
                    return
                log.warning("suppression: cannot follow the additions log (%s); every RCPT "
                            "is looked up until it can", e)
                self._bloom = None
                await asyncio.sleep(_FOLLOW_RETRY)

    # --- RCPT -----------------------------------------------------------------------------
    def screen_rcpt(self, txn: PolicyTxn, recipient: str,
                    charge: Callable[[], Answer]) -> Answer:
        """RCPT for ingress: the refusal (or drop) of a suppressed recipient, else what
        `charge()` (policy's answer_rcpt) answers. At once, without a lookup, when no list
        of the sender's chain has entries (known only with the embedded store)."""
        scopes = [t.name for t in txn.chain] or [txn.tenant]
        scopes.append(GLOBAL)
        known = self._known
        if known is not None and not any(s in known for s in scopes):
            return charge()
        bloom = self._bloom
        if bloom is not None:
            # A recipient's hash (an HMAC) is probed for only once an erased address's
            # entry is in the filter.
            if not any(t in bloom for t in self._targets(recipient, bloom.hashed)):
                return charge()
        return self._screen(txn, recipient, scopes, charge)

    async def _screen(self, txn: PolicyTxn, recipient: str, scopes: list[str],
                      charge: Callable[[], Answer]) -> Reply | None:
        try:
            hit = await self.check(scopes, recipient)
        except Exception:
            log.exception("suppression: RCPT lookup failed; deferring")
            return R_UNAVAILABLE
        if hit is None:
            answer = charge()
            return await answer if inspect.isawaitable(answer) else answer
        if self.events is not None:
            self.events.emit("suppressed", tenant=txn.tenant, recipient=recipient,
                             scope=hit.scope, reason=hit.reason, entry=hit.address,
                             action=self.cfg.action)
        if self.cfg.action == "drop":
            self._dropped.setdefault(txn, set()).add(recipient.strip().strip("<>").lower())
            return R_DROPPED
        return refusal(hit)

    def _targets(self, recipient: str, hashed: bool = True) -> tuple[str, ...]:
        """What a recipient is looked up as: itself, its domain, and (unless `hashed` says
        no erased address is listed) its hash."""
        found = candidates(recipient)
        if self.hasher is None or not hashed:
            return found
        return (*found, self.hasher(found[0]))

    async def write_hashed(self, entries: builtins.list[Entry]) -> None:
        """Entries for erased addresses (their `address` is a keyed hash): written as
        operator entries, without an event (an event would name nothing useful)."""
        await self._write(entries, True)

    def keep(self, txn: PolicyTxn, recipients: builtins.list[R]) -> builtins.list[R]:
        """`recipients` (of an envelope) without those `txn` dropped at RCPT."""
        dropped = self._dropped.pop(txn, None)
        if not dropped:
            return recipients
        return [r for r in recipients if r.address.strip().strip("<>").lower() not in dropped]

    # --- the lists ------------------------------------------------------------------------
    async def check(self, scopes: Sequence[str], recipient: str) -> Entry | None:
        """The entry that suppresses `recipient` for mail of the first of `scopes` (nearest
        scope first; in one scope the address before its domain), or None."""
        targets = self._targets(recipient)
        hits = await self.backend.find(scopes, targets, self.clock.now())
        if not hits:
            return None
        order = {s: i for i, s in enumerate(scopes)}
        return min(hits, key=lambda e: (order.get(e.scope, len(order)),
                                        targets.index(e.address)))

    def entry(self, scope: str, address: str, reason: str, source: str = "",
              expires_at: float | None = None, created_at: float | None = None) -> Entry:
        """A new entry, with the default expiry of its reason; ValueError if invalid."""
        if reason not in REASONS:
            raise ValueError(f"reason must be one of {', '.join(REASONS)}")
        now = self.clock.now()
        if expires_at is None and reason == "hard_bounce" and self.cfg.hard_bounce_expiry:
            expires_at = now + self.cfg.hard_bounce_expiry
        return Entry(scope, normalise_target(address), reason, source,
                     now if created_at is None else created_at, expires_at)

    async def add(self, entry: Entry, *, replace: bool = True) -> None:
        await self._write([entry], replace)
        if self.events is not None:
            self.events.emit("suppression_added", tenant=None if entry.scope == GLOBAL
                             else entry.scope, scope=entry.scope, address=entry.address,
                             reason=entry.reason, source=entry.source or None)

    async def import_entries(self, entries: Iterable[Entry], *, batch: int = 50_000) -> int:
        """Add (replacing) many entries, in batches: idempotent."""
        n, chunk = 0, []
        for e in entries:
            chunk.append(e)
            if len(chunk) >= batch:
                n += await self._import(chunk)
                chunk = []
        if chunk:
            n += await self._import(chunk)
        return n

    async def _import(self, chunk: builtins.list[Entry]) -> int:
        await self._write(chunk, True)
        return len(chunk)

    async def _write(self, entries: builtins.list[Entry], replace: bool) -> None:
        """Learn the entries (scopes, filter) before writing them: RCPT looks them up from
        now on. The filter is filled in slices, yielding between them (an import adds a
        million)."""
        if self._known is not None:
            self._known.update(e.scope for e in entries)
        if self._bloom is None:
            await self.backend.upsert(entries, replace)
            return
        addresses = [e.address for e in entries]
        key = self._seq = self._seq + 1
        self._inflight[key] = addresses  # a rebuilt filter must hold them too
        try:
            for i in range(0, len(addresses), _LEARN_SLICE):
                self._learn(addresses[i:i + _LEARN_SLICE])
                if len(addresses) > _LEARN_SLICE:
                    await asyncio.sleep(0)
            await self.backend.upsert(entries, replace)
        finally:
            del self._inflight[key]

    def _learn(self, addresses: builtins.list[str]) -> None:
        bloom = self._bloom
        assert bloom is not None
        bloom.update(addresses)
        if self._pending is not None:
            self._pending.extend(addresses)
        elif bloom.full:
            # What is not in policy.db yet is not in what the rebuild reads: given to it.
            self._pending = [a for batch in self._inflight.values() for a in batch]
            self._growing = asyncio.get_running_loop().create_task(self._grow(self._pending))

    async def _grow(self, pending: builtins.list[str]) -> None:
        """Past its capacity the filter answers "maybe" too often: build a larger one from
        the lists (policy.db on its reader thread, or Redis), with what was added meanwhile."""
        old = self._bloom
        assert old is not None
        try:
            new = Bloom(4 * old.count)
            await self.backend.fill(new)  # type: ignore[attr-defined]
            new.update(pending)
            if self._bloom is old:  # not dropped meanwhile (a gap in a shared log)
                self._bloom = new
        except Exception:
            log.exception("suppression: cannot rebuild the address filter")
        finally:
            self._pending = None

    async def prune(self) -> int:
        """Drop entries past their expiry (reads skip them already; this frees the rows)."""
        return await self.backend.prune(self.clock.now())

    async def remove(self, scope: str, address: str) -> bool:
        return await self.backend.remove(scope, normalise_target(address))

    async def list(self, scope: str | None = None, cursor: str | None = None,
                   limit: int = 100) -> tuple[builtins.list[Entry], str | None]:
        """One page of active entries in (scope, address) order, and the cursor of the
        next page (None at the end). ValueError for a bad cursor or limit."""
        if not 1 <= limit <= _MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {_MAX_PAGE}")
        after = parse_cursor(cursor)
        page = await self.backend.page(scope, after, limit + 1, self.clock.now())
        if len(page) > limit:
            return page[:limit], _cursor(page[limit - 1])
        return page, None

    async def export(self, scope: str | None = None,
                     page: int = _MAX_PAGE) -> AsyncIterator[builtins.list[Entry]]:
        """Every active entry (of `scope`, or all), a page at a time."""
        cursor: str | None = None
        while True:
            entries, cursor = await self.list(scope, cursor, page)
            if entries:
                yield entries
            if cursor is None:
                return

    async def record(self, kind: str, tenant: str | None, address: str,
                     source: str = "") -> Entry | None:
        """What a feedback event says: `kind` is an event name (bounced, complained,
        unsubscribed) or a reason. Adds the entry to the tenant's scope (global without a
        tenant) and returns it; None when nothing is added yet (a hard bounce short of
        hard_bounce_count) or the address is not one."""
        reason = _KINDS.get(kind, kind)
        scope = tenant or GLOBAL
        try:
            target = normalise_target(address)
        except ValueError:
            log.info("suppression: not recording %s for %r: not an address", reason, address)
            return None
        if reason == "hard_bounce" and self.cfg.hard_bounce_count > 1:
            n = await self.backend.strike(scope, target, self.clock.now(),
                                          self.cfg.hard_bounce_window)
            if n < self.cfg.hard_bounce_count:
                return None
        entry = self.entry(scope, target, reason, source)
        # Automatic: never shortens an entry that suppresses longer (a complaint's "never").
        await self.add(entry, replace=False)
        return entry

    # --- the events stream ------------------------------------------------------------------
    def listen(self, events: EventLog) -> None:
        events.listeners.append(self._on_event)

    def _on_event(self, record: dict[str, Any]) -> None:
        kind = record.get("event")
        if kind not in _KINDS:
            return
        if kind == "bounced" and not (record.get("category") == "invalid_recipient"
                                      or record.get("suppress")):
            return
        recipient = record.get("recipient")
        if not isinstance(recipient, str) or not recipient:
            return
        source = f"{kind} {record['id']}" if record.get("id") else kind
        try:
            task = asyncio.get_running_loop().create_task(
                self.record(kind, record.get("tenant"), recipient, source))
        except RuntimeError:  # no loop (a CLI's EventLog): nothing to record into
            return
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("suppression: recording an entry failed: %s", task.exception())

    async def settle(self) -> None:
        """Wait for the entries the events stream scheduled so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))
