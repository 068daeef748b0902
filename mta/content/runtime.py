"""Content rules added at run time: `RuntimeRules` (the admin API's POST/DELETE
/api/v1/admin/content/rules, `mta content add|remove`).

A rule sent at run time is the same table as a [[content.rules]] entry and is checked by
the same code (mta.config.loader.build_table): a bad regex or an unknown key is refused
with the config's own message. Accepted rules are kept in the policy store (namespace
"content_rules", one JSON record per rule: policy.db, or the cluster's Redis, so every
node sees them) and run after the config's rules, in the order they were added. A name
the config already uses is refused; a config reload that brings a name a run-time rule has
makes the config's win (the run-time one is kept in the store but not run, and says so).

Each node re-reads the store every [content] rules_poll, so a rule added through one node
holds on every node within that time; on the node that took the request it holds at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from mta.config.content import ContentRuleConfig
from mta.config.loader import build_table
from mta.config.values import ConfigError
from mta.policy.kv import PolicyKV

__all__ = ["NAMESPACE", "RuleError", "RuntimeRules"]

log = logging.getLogger("mta.content")

NAMESPACE = "content_rules"
MAX_RULES = 1000  # a store of rules is for an operator's hand, not a feed


class RuleError(ValueError):
    """Refused: `status` and `code` are the admin API's answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


def parse_rule(doc: Any) -> ContentRuleConfig:
    """A rule table (JSON object) as the config would read it, or RuleError 400."""
    try:
        return build_table(ContentRuleConfig, doc, "rule")
    except ConfigError as e:
        raise RuleError(400, "bad_rule", "; ".join(e.errors)) from None


class RuntimeRules:
    def __init__(self, kv: PolicyKV, content: Any, *, events: Any = None,
                 poll: float = 10.0) -> None:
        self.kv = kv
        self.content = content  # the ContentFilter the rules run in
        self.events = events
        self.poll = poll
        # name -> (the record as stored, the parsed rule), in the order added.
        self._records: dict[str, dict[str, Any]] = {}
        self._raw: dict[str, str] | None = None  # the store's records as last read
        self._task: asyncio.Task[None] | None = None

    # --- reading the store --------------------------------------------------------------

    async def load(self) -> bool:
        """Re-read the store; apply the rules if they changed. Returns whether they did."""
        raw = await self.kv.items(NAMESPACE)
        if raw == self._raw:
            return False  # nothing changed since the last look: no rule is parsed again
        self._raw = raw
        records: dict[str, dict[str, Any]] = {}
        for name, text in raw.items():
            try:
                rec = json.loads(text)
                parse_rule(rec["rule"])  # a record a newer version wrote: skip, say so
            except (ValueError, KeyError, TypeError, RuleError) as e:
                log.warning("content rule %r in the store is not usable: %s", name, e)
                continue
            records[name] = rec
        records = dict(sorted(records.items(), key=lambda kv: (kv[1].get("added", 0), kv[0])))
        if records == self._records:
            return False
        self._records = records
        self._apply()
        return True

    def _apply(self) -> None:
        self.content.set_runtime_rules([parse_rule(r["rule"]) for r in self._records.values()])

    def start(self) -> RuntimeRules:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self.load()
            except Exception as e:  # the store unreachable for a while: keep what runs
                log.warning("content rules: cannot read the store: %s", e)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # --- the admin routes -------------------------------------------------------------

    def describe(self) -> list[dict[str, Any]]:
        """Each run-time rule's record: the rule as given, when, by whom, and whether it runs."""
        shadowed = {r.name for r in self.content.config_rules}
        return [{"name": name, "rule": rec["rule"], "added": rec.get("added"),
                 "by": rec.get("by"), "active": name not in shadowed}
                for name, rec in self._records.items()]

    async def add(self, doc: Any, *, by: str = "admin-api") -> dict[str, Any]:
        rule = parse_rule(doc)
        if rule.name in {r.name for r in self.content.config_rules}:
            raise RuleError(409, "rule_in_config", f"rule {rule.name!r} is in the config "
                            "file: change it there and reload (SIGHUP)")
        await self.load()  # another node's rules count against the name and the limit
        if rule.name in self._records:
            raise RuleError(409, "rule_exists", f"rule {rule.name!r} exists: remove it first")
        if len(self._records) >= MAX_RULES:
            raise RuleError(409, "too_many_rules", f"at most {MAX_RULES} run-time rules")
        rec = {"rule": doc, "added": time.time(), "by": by}
        await self.kv.put(NAMESPACE, rule.name, json.dumps(rec, sort_keys=True))
        await self.load()
        if self.events is not None:
            self.events.emit("content_rule_added", rule=rule.name, kind=rule.kind,
                             action=rule.action, by=by)
        return {"name": rule.name, **rec, "active": True}

    async def remove(self, name: str, *, by: str = "admin-api") -> None:
        if not await self.kv.delete(NAMESPACE, name):
            if name in {r.name for r in self.content.config_rules}:
                raise RuleError(409, "rule_in_config", f"rule {name!r} is in the config "
                                "file: remove it there and reload (SIGHUP)")
            raise RuleError(404, "no_such_rule", f"no run-time content rule {name!r}")
        await self.load()
        if self.events is not None:
            self.events.emit("content_rule_removed", rule=name, by=by)
