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
import re
from collections.abc import Callable
from dataclasses import dataclass

from mta.config.content import ContentConfig, ContentRuleConfig
from mta.content.message import Facts, read_facts

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


def _header_matcher(r: ContentRuleConfig) -> Matcher:
    name, rx = r.header.lower(), re.compile(r.pattern)
    return lambda f: any(rx.search(v) for v in f.header_values(name))


def _body_matcher(r: ContentRuleConfig) -> Matcher:
    rx = re.compile(r.body)
    return lambda f: any(rx.search(t) for t in f.texts)


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
    "header": _header_matcher, "body": _body_matcher, "attachment": _attachment_matcher,
    "max_size": _structure_matcher, "max_parts": _structure_matcher,
    "require_headers": _structure_matcher}


class Rules:
    """The compiled [[content.rules]] of one config."""

    def __init__(self, cfg: ContentConfig) -> None:
        self.scan_limit = cfg.scan_limit
        self.max_hosts = cfg.max_url_hosts
        self.rules = [Rule(r.name, r.kind, r.action, r.score, r.text,
                           r.url_blocklist.rstrip(".").lower()) for r in cfg.rules]
        self.by_name = {r.name: r for r in self.rules}
        self._matchers = [(r.name, _MATCHERS[r.kind](r)) for r in cfg.rules
                          if r.kind != "url_blocklist"]
        self.zones = sorted({r.zone for r in self.rules if r.zone})

    def __bool__(self) -> bool:
        return bool(self.rules)

    def scan(self, data: bytes) -> Scan:
        facts = read_facts(data, scan_limit=self.scan_limit, max_hosts=self.max_hosts,
                           want_hosts=bool(self.zones))
        hits = tuple(name for name, match in self._matchers if match(facts))
        return Scan(hits, tuple(facts.hosts), facts.parts)
