"""[content] and [[content.rules]]: the operator's content rules and the optional scanner
(mta/content).

Each rule matches one thing (a header pattern, a body pattern, banned attachments, URL
domains on a DNS blocklist, or a size/structure check) and has one action: `reject`
(550 5.7.1 with the rule's public `text`), `hold` (queued held, for `mta queue release`),
`tag` (named in the [content] tag_header) or `score` (its `score` added to the message's
total, which the thresholds below turn into one of the other three). Validation here names
the rule and the key: `content.rules[2]: rule "pharma": body: bad regex: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from mta.config.values import Duration, Size

__all__ = ["ACTIONS", "SCANNER_ACTIONS", "ContentConfig", "ContentRuleConfig"]

ACTIONS = ("reject", "hold", "tag", "score")
# What rspamd answers in "action" (its protocol, /checkv2), and what each becomes here by
# default. "soft reject" is rspamd's "try again later"; for a tenant's outbound mail that
# means "a person should look": held. Greylisting is for inbound strangers, not tenants.
SCANNER_ACTIONS: dict[str, str] = {
    "reject": "reject", "soft reject": "hold", "rewrite subject": "tag",
    "add header": "tag", "greylist": "tag", "no action": "none"}
_SCANNER_TARGETS = ("reject", "hold", "tag", "none")
# The kinds of match a rule can be; exactly one per rule, so its name says what it does.
_KINDS = ("header", "body", "attachment", "url_blocklist", "max_size", "max_parts",
          "require_headers")
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # RFC 5322 2.2 field name
_ZONE = re.compile(r"^(?=.{1,200}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_TEXT_MAX = 200  # a reply line stays well under 512 octets (RFC 5321 4.5.3.1.5)


def _public_text(value: str, key: str) -> None:
    if len(value) > _TEXT_MAX or any(not (32 <= ord(c) < 127) for c in value):
        raise ValueError(f"{key}: printable ASCII on one line, at most {_TEXT_MAX} characters")


def _regex(pattern: str, key: str) -> None:
    try:
        re.compile(pattern)
    except re.error as e:
        raise ValueError(f"{key}: bad regex {pattern!r}: {e}") from None


@dataclass(frozen=True)
class ContentRuleConfig:
    """One [[content.rules]] entry. Give `name`, exactly one kind of match, and `action`."""

    name: str = ""
    # Header pattern: a regex (Python syntax; "(?i)" for case-insensitive) searched in each
    # value of the header `header`, unfolded and with RFC 2047 words decoded.
    header: str = ""
    pattern: str = ""
    # Body pattern: searched in each text part (text/plain, text/html), decoded, within the
    # first [content] scan_limit characters of the part.
    body: str = ""
    # Banned attachments: file name extensions ("exe", "js") and/or content types
    # ("application/x-msdownload", "application/x-*"); either one matching is a match.
    attachment_extensions: list[str] = field(default_factory=list)
    attachment_types: list[str] = field(default_factory=list)
    # URL domains: every host named by a http(s) URL in a text part (and its parents down
    # to two labels) is looked up as <name>.<zone> (RFC 5782 2.1; IPv4 hosts reversed), A
    # record, through the [dns] resolver and its cache. An answer in 127.0.0.0/8 below
    # 127.255.255.0 is a listing; 127.255.255.x are the list's error codes, not listings.
    url_blocklist: str = ""
    # Size and structure: the whole message over `max_size`; more than `max_parts` MIME
    # parts; any of `require_headers` missing (e.g. ["From", "Date"]).
    max_size: Size = 0
    max_parts: int = 0
    require_headers: list[str] = field(default_factory=list)
    # reject | hold | tag | score
    action: str = "reject"
    # Added to the message's total when action = "score" (may be negative: a known-good
    # sign that offsets others).
    score: float = 0.0
    # What the sender is told (reject) and what the held reason says (hold); the default
    # names no rule, so a rule's workings are not taught to the sender.
    text: str = "Message refused by content policy"

    def __post_init__(self) -> None:
        name = self.name
        if not name or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise ValueError("name: 1-64 of A-Z a-z 0-9 _ . - is required")
        where = f"rule {name!r}"
        kinds = [k for k in _KINDS if self._has(k)]
        if len(kinds) != 1:
            got = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"{where}: give exactly one of header (with pattern), body, "
                             f"attachment_extensions/attachment_types, url_blocklist, "
                             f"max_size, max_parts, require_headers (got {got})")
        if self.header:
            if not _HEADER_NAME.match(self.header):
                raise ValueError(f"{where}: header: not a header field name")
            if not self.pattern:
                raise ValueError(f"{where}: pattern: required with header")
            _regex(self.pattern, f"{where}: pattern")
        elif self.pattern:
            raise ValueError(f"{where}: pattern: only with header (a body regex is `body`)")
        if self.body:
            _regex(self.body, f"{where}: body")
        for ext in self.attachment_extensions:
            if not re.fullmatch(r"\.?[A-Za-z0-9_-]{1,32}", ext):
                raise ValueError(f"{where}: attachment_extensions: bad extension {ext!r}")
        for ct in self.attachment_types:
            if not re.fullmatch(r"[A-Za-z0-9.+_*-]+/[A-Za-z0-9.+_*-]+", ct):
                raise ValueError(f"{where}: attachment_types: bad content type {ct!r}")
        if self.url_blocklist and not _ZONE.match(self.url_blocklist.rstrip(".")):
            raise ValueError(f"{where}: url_blocklist: not a DNS zone name")
        if self.max_size < 0 or self.max_parts < 0:
            raise ValueError(f"{where}: max_size and max_parts must be positive")
        for h in self.require_headers:
            if not _HEADER_NAME.match(h):
                raise ValueError(f"{where}: require_headers: not a header name: {h!r}")
        if self.action not in ACTIONS:
            raise ValueError(f"{where}: action: unknown action {self.action!r} "
                             f"(one of {', '.join(ACTIONS)})")
        if self.action == "score" and self.score == 0:
            raise ValueError(f"{where}: score: required (non-zero) with action = \"score\"")
        if self.action != "score" and self.score != 0:
            raise ValueError(f"{where}: score: only with action = \"score\"")
        _public_text(self.text, f"{where}: text")

    def _has(self, kind: str) -> bool:
        if kind == "attachment":
            return bool(self.attachment_extensions or self.attachment_types)
        return bool(getattr(self, kind))

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if self._has(k))


@dataclass(frozen=True)
class ContentConfig:
    """[content]: how rules and the scanner are run and how their findings add up."""

    rules: list[ContentRuleConfig] = field(default_factory=list)
    # Score thresholds over the total of the `score` rules (and, with scanner_score, of
    # rspamd's score): at or above reject_score 550 5.7.1, hold_score held, tag_score
    # tagged. 0 = that threshold is off.
    reject_score: float = 0.0
    hold_score: float = 0.0
    tag_score: float = 0.0
    # The reply text of a refusal by score.
    reject_text: str = "Message refused by content policy"
    # Tagged (and held) messages get this header naming the rules that matched and the
    # score: "X-Mta-Content: rule-a, rule-b; score=4.5".
    tag_header: str = "X-Mta-Content"
    # Body patterns and URL extraction look at most this many characters of each text
    # part: bounds a pattern's work on a 25 MB body (Python regexes have no timeout).
    scan_limit: Size = 1024 * 1024
    # Body patterns run as one Hyperscan pass naming the few that may match, then `re` on
    # those alone (mta/content/multi.py; exact Python results). False: `re` runs every
    # pattern over every part. Without the hyperscan package (not x86-64) it is False.
    multi_pattern: bool = True
    # Distinct URL hosts looked up per message: a message listing thousands of links must
    # not become thousands of DNS questions.
    max_url_hosts: int = 20
    # Rules run in this many worker processes, off the event loop and its GIL (a regex
    # over megabytes holds the GIL). 0: in a thread of the daemon (no process start; a
    # long scan then slows the daemon down while it runs).
    workers: int = 1
    # A scan taking longer than this (a pathological regex) is abandoned, its worker
    # killed; the message gets what rules_fail says.
    rules_timeout: Duration = 30.0
    # "closed": 451 4.7.1 (the client tries again later); "open": accepted unscanned.
    rules_fail: str = "closed"
    # rspamd's normal worker (its HTTP protocol, POST /checkv2), e.g.
    # "http://127.0.0.1:11333"; "" = no scanner.
    scanner_url: str = ""
    scanner_timeout: Duration = 10.0
    # rspamd unreachable, erroring or slower than scanner_timeout: "open" accepts the
    # message as if it had no scanner verdict, "closed" answers 451 4.7.1.
    scanner_fail: str = "open"
    # rspamd action -> ours (reject, hold, tag, none); unlisted actions keep the defaults
    # of SCANNER_ACTIONS.
    scanner_actions: dict[str, str] = field(default_factory=dict)
    # Also add rspamd's score to the rules' total (times this weight); 0 = its action alone.
    scanner_score: float = 0.0
    # Rules added at run time (admin API, `mta content add`) live in the policy store;
    # each node re-reads them this often, so one added on another node holds here within it.
    rules_poll: Duration = 10.0

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"rules: duplicate rule name(s): {', '.join(dup)}")
        for key in ("reject_score", "hold_score", "tag_score"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key}: must be 0 (off) or positive")
        _public_text(self.reject_text, "reject_text")
        if not _HEADER_NAME.match(self.tag_header):
            raise ValueError("tag_header: not a header field name")
        if self.scan_limit < 1024:
            raise ValueError("scan_limit: must be at least 1KiB")
        if self.max_url_hosts < 0 or self.workers < 0:
            raise ValueError("max_url_hosts and workers must be 0 or positive")
        if self.rules_timeout <= 0 or self.scanner_timeout <= 0 or self.rules_poll <= 0:
            raise ValueError("rules_timeout, scanner_timeout and rules_poll must be positive")
        for key in ("rules_fail", "scanner_fail"):
            if getattr(self, key) not in ("open", "closed"):
                raise ValueError(f"{key}: must be \"open\" or \"closed\"")
        if self.scanner_url and not re.match(r"^https?://[^/\s]+/?$", self.scanner_url):
            raise ValueError("scanner_url: expected http://host:port (rspamd's worker)")
        for k, v in self.scanner_actions.items():
            if k not in SCANNER_ACTIONS:
                raise ValueError(f"scanner_actions: unknown rspamd action {k!r} (one of "
                                 f"{', '.join(SCANNER_ACTIONS)})")
            if v not in _SCANNER_TARGETS:
                raise ValueError(f"scanner_actions.{k}: unknown action {v!r} (one of "
                                 f"{', '.join(_SCANNER_TARGETS)})")

    def scanner_action(self, rspamd_action: str) -> str:
        """Ours for rspamd's `action` ("none" for one we don't know)."""
        return self.scanner_actions.get(rspamd_action,
                                        SCANNER_ACTIONS.get(rspamd_action, "none"))
