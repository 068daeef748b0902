"""An address on the suppression lists: its entries in every scope, and what replaces them.

Erasure removes each plain entry and writes, in the same scope with the same reason and
expiry, one for the address's keyed hash: RCPT looks the hash up too (Suppressions.hasher),
so mail to an erased address is still refused. An address on no list gets a global entry
(reason "manual", source "gdpr erase"): whoever asked to be erased is not mailed again
unless an operator removes it (`mta suppress remove hmac:...`); an address erased before
(its hash on a list already) gets none.
"""

from __future__ import annotations

from typing import Any

from mta.suppress import GLOBAL, Entry, Suppressions

__all__ = ["erase_suppressions", "find_suppressions"]


async def _entries(lists: Suppressions, address: str) -> list[Entry]:
    scopes = sorted(await lists.backend.scopes() | {GLOBAL})
    found: list[Entry] = []
    # One scope at a time: a backend may answer only the nearest hit of several scopes.
    for scope in scopes:
        found += await lists.backend.find([scope], [address], 0.0)
    return found


def scopes_of(entries: list[Entry], scopes: set[str]) -> list[str]:
    return sorted(scopes | {GLOBAL} | {e.scope for e in entries})


async def find_suppressions(lists: Suppressions, address: str) -> list[dict[str, Any]]:
    return [e.as_dict() for e in await _entries(lists, address)]


async def erase_suppressions(lists: Suppressions, address: str, token: str) -> dict[str, int]:
    entries = await _entries(lists, address)
    kept = [Entry(e.scope, token, e.reason, "gdpr erase", e.created_at, e.expires_at)
            for e in entries]
    if not kept and not await _entries(lists, token):  # (erased before: by another worker)
        kept = [Entry(GLOBAL, token, "manual", "gdpr erase", lists.clock.now(), None)]
    if kept:
        await lists.write_hashed(kept)
    for e in entries:
        await lists.backend.remove(e.scope, e.address)
    forget = getattr(lists.backend, "forget", None)
    if forget is not None:  # strikes kept apart from policy.db (Redis)
        await forget(scopes_of(entries, await lists.backend.scopes()), address)
    return {"entries_hashed": len(entries), "entries_added": len(kept) - len(entries)}
