"""Operator content rules, compiled once: `Rules(cfg).scan(message) -> Scan`.

Owns what each kind of [[content.rules]] entry matches (header and body patterns, banned
attachments, size and structure checks) and the order the findings are reported in (the
config's). It is pure and synchronous, so it can run in a worker process (mta.content.
worker): it reads the message once (mta.content.message) and runs every rule over the
facts. URL blocklist rules need DNS, which belongs to the event loop: `scan` only collects
the URL hosts for them (mta.content.blocklist looks them up).

Patterns are bounded by what they are given: header values (short), and the first
[content] scan_limit characters of each text part.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from mta.config.content import ContentConfig, ContentRuleConfig
from mta.content.message import Facts, read_facts
from mta.content.multi import PatternSet

__all__ = ["Rule", "Rules", "Scan"]

Matcher = Callable[[Facts], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    action: str  # reject | hold | tag | score
    score: float
    text: str
    zone: str  # url_blocklist rules: the DNS zone; "" otherwise


@dataclass(frozen=True, slots=True)
class Scan:
    """What the rules found in one message: the names of the rules that matched (config
    order, URL rules excluded) and the URL hosts for the URL rules to look up."""

    hits: tuple[str, ...]
    hosts: tuple[str, ...]
    parts: int = 0


def _attachment_matcher(r: ContentRuleConfig) -> Matcher:
    exts = frozenset(e.lstrip(".").lower() for e in r.attachment_extensions)
    types = [t.lower() for t in r.attachment_types]

    def match(f: Facts) -> bool:
        return any(ext in exts or any(fnmatch.fnmatchcase(ctype, t) for t in types)
                   for ext, ctype in f.attachments)
    return match


def _structure_matcher(r: ContentRuleConfig) -> Matcher:
    if r.max_size:
        limit = r.max_size
        return lambda f: f.size > limit
    if r.max_parts:
        most = r.max_parts
        return lambda f: f.parts > most
    required = [h.lower() for h in r.require_headers]
    return lambda f: any(not f.header_values(h) for h in required)


_MATCHERS: dict[str, Callable[[ContentRuleConfig], Matcher]] = {
    "attachment": _attachment_matcher,
    "max_size": _structure_matcher, "max_parts": _structure_matcher,
    "require_headers": _structure_matcher}


class Rules:
    """The compiled [[content.rules]] of one config."""

    def __init__(self, cfg: ContentConfig, *, engine: bool | None = None) -> None:
        """`engine`: the one-pass scan (default: `[content] multi_pattern`); False runs
        every pattern through `re` alone, what the one-pass scan must agree with."""
        self.scan_limit = cfg.scan_limit
        self.max_hosts = cfg.max_url_hosts
        self.rules = [Rule(r.name, r.kind, r.action, r.score, r.text,
                           r.url_blocklist.rstrip(".").lower()) for r in cfg.rules]
        self.by_name = {r.name: r for r in self.rules}
        # Patterns read the same texts share one multi-pattern pass (mta.content.multi):
        # every body rule (the text parts), and the rules of each header field.
        engine = cfg.multi_pattern if engine is None else engine
        groups: dict[str, list[str]] = {}
        where: dict[str, tuple[str, int]] = {}
        for r in cfg.rules:
            if r.kind in ("body", "header"):
                key = "" if r.kind == "body" else r.header.lower()  # "": the text parts
                patterns = groups.setdefault(key, [])
                where[r.name] = (key, len(patterns))
                patterns.append(r.body if r.kind == "body" else r.pattern)
        self.groups = {k: PatternSet(v, engine=engine) for k, v in groups.items()}
        # Each pattern's rule by its place in the config (hits are reported in that
        # order), so a scan visits only the patterns the one-pass scan let through.
        self._names = [r.name for r in cfg.rules]
        self._at: dict[str, list[int]] = {k: [0] * len(v) for k, v in groups.items()}
        self._others: list[tuple[int, Matcher]] = []
        for pos, r in enumerate(cfg.rules):
            if r.name in where:
                key, i = where[r.name]
                self._at[key][i] = pos
            elif r.kind != "url_blocklist":
                self._others.append((pos, _MATCHERS[r.kind](r)))
        self.zones = sorted({r.zone for r in self.rules if r.zone})

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(self, data: bytes) -> Scan:
        facts = read_facts(data, scan_limit=self.scan_limit, max_hosts=self.max_hosts,
                           want_hosts=bool(self.zones))
        found: list[int] = []
        for key, patterns in self.groups.items():
            values = facts.texts if key == "" else facts.header_values(key)
            if not values:
                continue
            maybe = patterns.prepare(values)
            at = self._at[key]
            for i in (range(len(at)) if maybe is None else maybe):
                if patterns.search(i, values, None):
                    found.append(at[i])
        found.extend(pos for pos, match in self._others if match(facts))
        hits = [self._names[pos] for pos in sorted(found)]
        return Scan(tuple(hits), tuple(facts.hosts), facts.parts)
