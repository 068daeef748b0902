"""Bounce classification: a failure `Reply` -> (category, action, rule name).

Owns the rule format, the matcher and the output of `mta bounce classify`. Rules are data
(`rules.toml` beside this module, plus an optional operator file checked first), compiled
ONCE at load into a single regular expression whose alternatives are the rules in file
order, so the first rule that matches wins (as KumoMTA's bounce-classify does with a
RegexSet). A reply that no rule matches gets category `other`, and every rule without an
explicit `action` retries a 4xx and bounces a 5xx.

The matcher runs over one canonical line per reply, "CODE ENHANCED\\nTEXT" ("-" for a reply
without an enhanced status, the lines of a multi-line reply joined by a space), e.g.

    550 5.1.1
    The email account that you tried to reach does not exist. Please try ...
"""

from __future__ import annotations

import functools
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mta.rfc5321 import Reply, ReplyParseError

__all__ = [
    "Action",
    "Category",
    "Classification",
    "Classifier",
    "Rule",
    "RulesError",
    "classify_main",
    "parse_rules",
]


class Category(StrEnum):
    INVALID_RECIPIENT = "invalid_recipient"
    MAILBOX_FULL = "mailbox_full"
    SPAM_BLOCK = "spam_block"  # the source (IP/domain) is refused: blocklist, reputation
    CONTENT_REJECTED = "content_rejected"  # this message is refused: spam, virus, attachment
    POLICY = "policy"
    RATE_LIMITED = "rate_limited"  # "too fast / too much": slow down and retry
    GREYLISTED = "greylisted"
    RELAY_DENIED = "relay_denied"
    MESSAGE_TOO_LARGE = "message_too_large"
    DNS_FAILURE = "dns_failure"
    CONNECTION_FAILURE = "connection_failure"
    TLS_FAILURE = "tls_failure"
    AUTH_REQUIRED = "auth_required"
    EXPIRED = "expired"
    OTHER = "other"


class Action(StrEnum):
    RETRY = "retry"
    BOUNCE = "bounce"


class RulesError(ValueError):
    """Invalid rules; `errors` holds one `FILE: rule[N].key: problem` line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Classification:
    category: Category
    action: Action
    rule: str  # the matching rule's name; "" when no rule matched (default by reply class)

    def __str__(self) -> str:
        """What `mta bounce classify` prints: "category action rule" ("-" for no rule)."""
        return f"{self.category} {self.action} {self.rule or '-'}"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    category: Category
    code: tuple[str, ...] = ()  # "550", "55x", "5xx"
    enhanced: tuple[str, ...] = ()  # "5.1.1", "x.2.2", "5.7.x", "none"
    text: tuple[str, ...] = ()  # regexes, searched case-insensitively
    action: Action | None = None
    source: str = ""  # "FILE: rule[N]", for messages

    def pattern(self) -> str:
        """This rule as one regex over the canonical line (see the module docstring)."""
        code = "|".join(_code_regex(c) for c in self.code) if self.code else r"\d{3}"
        enh = ("|".join(_enhanced_regex(e) for e in self.enhanced) if self.enhanced
               else r"\S+")
        text = ("|".join(f"(?:{_fold(t)})" for t in self.text)) if self.text else ""
        return rf"(?:{code}) (?:{enh})\n" + (rf".*?(?:{text})" if text else "")


_CODE_RE = re.compile(r"^[245][0-9x]{2}$")
_ENH_RE = re.compile(r"^([245x])\.(\d{1,3}|x)\.(\d{1,3}|x)$")
_RULE_KEYS = {"name", "category", "code", "enhanced", "text", "action"}


def _fold(pattern: str) -> str:
    """Lower-case a regex's literals, leaving escapes (\\S, \\B, \\W ...) alone.

    The matcher runs over lower-cased text without re.IGNORECASE: measured on this rules
    file, that makes classification about 2.5 times faster (re's case-insensitive matching
    defeats its literal scanning)."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\":
            out.append(pattern[i:i + 2])
            i += 2
        else:
            out.append(pattern[i].lower())
            i += 1
    return "".join(out)


def _code_regex(pat: str) -> str:
    return pat.replace("x", r"\d")


def _enhanced_regex(pat: str) -> str:
    if pat == "none":
        return "-"
    cls, subject, detail = pat.split(".")
    parts = [r"[245]" if cls == "x" else cls,
             r"\d{1,3}" if subject == "x" else subject,
             r"\d{1,3}" if detail == "x" else detail]
    return r"\.".join(parts)


def _strings(value: Any, where: str, errors: list[str]) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    errors.append(f"{where}: expected a string or a non-empty list of strings")
    return ()


def parse_rules(text: str, file: str) -> list[Rule]:
    """Parse a rules file's TOML text; raise RulesError listing every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise RulesError([f"{file}: (syntax): {e}"]) from None
    errors: list[str] = []
    for key in raw:
        if key != "rule":
            errors.append(f"{file}: {key}: unknown key (rules are [[rule]] tables)")
    items = raw.get("rule", [])
    if not isinstance(items, list):
        raise RulesError([f"{file}: rule: expected [[rule]] tables"])
    rules: list[Rule] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        where = f"{file}: rule[{i}]"
        if not isinstance(item, dict):
            errors.append(f"{where}: expected a table")
            continue
        n_errors = len(errors)
        for key in item:
            if key not in _RULE_KEYS:
                errors.append(f"{where}.{key}: unknown key")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
            errors.append(f"{where}.name: required, a string without spaces")
            name = ""
        elif name in names:
            errors.append(f"{where}.name: duplicate rule name {name!r}")
        names.add(name)
        try:
            category = Category(item.get("category"))
        except ValueError:
            errors.append(f"{where}.category: expected one of "
                          f"{', '.join(c.value for c in Category)}")
            category = Category.OTHER
        action = None
        if "action" in item:
            try:
                action = Action(item["action"])
            except ValueError:
                errors.append(f"{where}.action: expected \"retry\" or \"bounce\"")
        code = _strings(item["code"], f"{where}.code", errors) if "code" in item else ()
        for c in code:
            if not _CODE_RE.match(c):
                errors.append(f"{where}.code: invalid pattern {c!r}: expected like "
                              "\"550\", \"55x\" or \"5xx\"")
        enhanced = (_strings(item["enhanced"], f"{where}.enhanced", errors)
                    if "enhanced" in item else ())
        for e in enhanced:
            if e != "none" and not _ENH_RE.match(e):
                errors.append(f"{where}.enhanced: invalid pattern {e!r}: expected like "
                              "\"5.1.1\", \"x.2.2\", \"5.7.x\" or \"none\"")
        texts = _strings(item["text"], f"{where}.text", errors) if "text" in item else ()
        for t in texts:
            try:
                compiled = re.compile(t, re.IGNORECASE)
            except re.error as e:
                errors.append(f"{where}.text: invalid regex {t!r}: {e}")
                continue
            # All rules share one compiled pattern: group numbers shift and names would
            # clash, so refuse what depends on them.
            if compiled.groups and re.search(r"\\\d|\(\?P[<=]", t):
                errors.append(f"{where}.text: named groups and backreferences are not "
                              f"supported: {t!r}")
        if not any(k in item for k in ("code", "enhanced", "text")):
            errors.append(f"{where}: needs at least one of code, enhanced, text")
        if len(errors) == n_errors:
            rules.append(Rule(name, category, code, enhanced, texts, action, where))
    if errors:
        raise RulesError(errors)
    return rules


def _builtin_rules() -> list[Rule]:
    text = resources.files("mta.bounce").joinpath("rules.toml").read_text(encoding="utf-8")
    return parse_rules(text, "mta/bounce/rules.toml")


def _load_file(path: Path) -> list[Rule]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RulesError([f"{path}: (file): cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise RulesError([f"{path}: (file): not UTF-8 text"]) from None
    return parse_rules(text, str(path))


class Classifier:
    """Classifies failure replies. Build one at start-up and pass it down."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RulesError([f"duplicate rule names: {', '.join(dupes)}"])
        # One alternation, anchored at the start: Python tries the alternatives in order,
        # so the first rule that can match is the one reported. An empty named group at
        # the end of each alternative tells which one it was (m.lastgroup).
        alternatives = [f"{r.pattern()}(?P<_r{i}>)" for i, r in enumerate(self.rules)]
        self._matcher = re.compile(r"\A(?:" + "|".join(alternatives) + ")",
                                   re.MULTILINE) if alternatives else None
        # Measured: ~90us per reply on the corpus (the regex tries each rule in turn).
        # Identical replies come in bursts ("421 4.7.0 [TSS04] ..." for a whole queue), so
        # a small per-instance memo makes those nearly free.
        self._classify_line = functools.lru_cache(maxsize=4096)(self._classify_line)

    @classmethod
    def load(cls, extra_rules: Path | str | Iterable[Rule] | None = None,
             *, builtin: bool = True) -> Classifier:
        """The built-in rules, after `extra_rules` (a rules file path or parsed rules)."""
        extra: list[Rule] = []
        if isinstance(extra_rules, str | Path):
            extra = _load_file(Path(extra_rules))
        elif extra_rules is not None:
            extra = list(extra_rules)
        rules = extra + (_builtin_rules() if builtin else [])
        # An operator rule may reuse a built-in name on purpose (to replace its meaning);
        # the operator's comes first and wins, the shadowed built-in is dropped.
        seen: set[str] = set()
        unique = []
        for r in rules:
            if r.name not in seen:
                seen.add(r.name)
                unique.append(r)
        return cls(unique)

    @classmethod
    def from_config(cls, cfg: Any) -> Classifier:
        """From a loaded `Config` (uses `[bounce] rules`)."""
        return cls.load(cfg.bounce.rules)

    def classify(self, reply: Reply) -> Classification:
        """Classify a failure reply (4xx or 5xx)."""
        if not 400 <= reply.code < 600:
            raise ValueError(f"not a failure reply: {reply}")
        line = f"{reply.code} {reply.enhanced or '-'}\n{' '.join(reply.lines()).lower()}"
        return self._classify_line(line)

    def _classify_line(self, line: str) -> Classification:
        default_action = Action.RETRY if line[0] == "4" else Action.BOUNCE
        if self._matcher is not None:
            m = self._matcher.match(line)
            if m is not None and m.lastgroup:
                rule = self.rules[int(m.lastgroup[2:])]
                return Classification(rule.category, rule.action or default_action, rule.name)
        return Classification(Category.OTHER, default_action, "")


# --- `mta bounce classify "550 5.1.1 ..."` (mta/cli/bounce.py parses the arguments) -------

EX_DATAERR = 65  # sysexits.h: the reply given is not a failure reply
EX_CONFIG = 78  # sysexits.h: the rules file is broken (as `mta check-config`)


def classify_main(text: str, cfg: Any | None = None) -> int:
    """Print "CATEGORY ACTION RULE" for one reply and return 0.

    RULE is the matching rule's name, or "-" when no rule matched (the default by reply
    class). A multi-line reply may be given with its lines separated by newlines. Operator
    rules come from `cfg.bounce.rules` (cfg None: built-in rules only).
    """
    try:
        classifier = Classifier.from_config(cfg) if cfg is not None else Classifier.load()
    except RulesError as e:
        for line in e.errors:
            print(line, file=sys.stderr)
        return EX_CONFIG
    try:
        reply = Reply.parse(text.strip())
        result = classifier.classify(reply)
    except (ReplyParseError, ValueError) as e:
        print(f"mta bounce classify: {e}", file=sys.stderr)
        return EX_DATAERR
    print(result)
    return 0
