"""MTA-STS (RFC 8461) as text: the `_mta-sts` TXT record, the policy file, MX patterns.

Owns the parsing of both published forms into values, without I/O, and the one rule that
matches an MX host name against a policy's `mx:` patterns (RFC 8461 4.1). Anything
malformed raises `StsSyntaxError` naming what is wrong: the caller then treats the domain
as one without a policy (RFC 8461 3.1, 3.2), which is opportunistic TLS as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MAX_AGE_LIMIT",
    "MODES",
    "StsPolicy",
    "StsRecord",
    "StsSyntaxError",
    "mx_matches",
    "parse_policy",
    "parse_record",
    "select_record",
]

MODES = ("enforce", "testing", "none")
# RFC 8461 3.2: max_age is at most 31557600 seconds (about a year); larger values are
# taken as that (a policy that asks for longer is still a policy).
MAX_AGE_LIMIT = 31557600

# RFC 8461 3.1 ABNF: sts-id = 1*32(ALPHA / DIGIT); extension names and values.
_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_WSP = " \t"
# A domain as RFC 5321 writes it (letters, digits, hyphens; labels up to 63 octets).
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


class StsSyntaxError(ValueError):
    """A TXT record or policy file that RFC 8461 does not allow."""


@dataclass(frozen=True, slots=True)
class StsRecord:
    """`_mta-sts.<domain>` TXT: "v=STSv1; id=..."; a new id means a new policy."""

    id: str


@dataclass(frozen=True, slots=True)
class StsPolicy:
    """A parsed policy file. `mx` patterns are lower case, without a trailing dot."""

    mode: str  # enforce | testing | none
    max_age: int  # seconds
    mx: tuple[str, ...]

    def allows(self, host: str) -> bool:
        """RFC 8461 4.1: the MX host name matches one of the patterns."""
        return any(mx_matches(p, host) for p in self.mx)

    def to_text(self) -> str:
        """The policy as a file again (what the cache keeps)."""
        lines = ["version: STSv1", f"mode: {self.mode}", *(f"mx: {m}" for m in self.mx),
                 f"max_age: {self.max_age}"]
        return "\r\n".join(lines) + "\r\n"


# --- the TXT record ------------------------------------------------------------------------

def parse_record(text: str) -> StsRecord:
    """One TXT record (its strings joined) -> StsRecord (RFC 8461 3.1)."""
    fields = [f.strip(_WSP) for f in text.split(";")]
    if fields and fields[-1] == "":
        fields.pop()  # a trailing delimiter is allowed
    if not fields or fields[0] != "v=STSv1":
        raise StsSyntaxError('does not begin with "v=STSv1"')
    if len(fields) < 2:
        raise StsSyntaxError("no id field")
    ident: str | None = None
    for f in fields[1:]:
        name, eq, value = f.partition("=")
        if not eq or not name:
            raise StsSyntaxError(f"field {f!r} is not name=value")
        if name == "id":
            if not _ID.fullmatch(value):
                raise StsSyntaxError(f"id {value!r} is not 1 to 32 letters or digits")
            if ident is None:
                ident = value
        elif not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            raise StsSyntaxError(f"field {f!r} is malformed")
    if ident is None:
        raise StsSyntaxError("no id field")
    return StsRecord(ident)


def select_record(records: Iterable[str]) -> StsRecord | None:
    """The domain's record among its TXT records: those not beginning with "v=STSv1" are
    not MTA-STS and are ignored; none left means no policy; more than one, or one that is
    malformed, is an error (RFC 8461 3.1: treated as no policy)."""
    candidates = [r for r in records if r.startswith("v=STSv1")]
    if not candidates:
        return None
    if len(candidates) > 1:
        raise StsSyntaxError(f"{len(candidates)} v=STSv1 records (exactly one allowed)")
    return parse_record(candidates[0])


# --- the policy file -----------------------------------------------------------------------

def parse_policy(text: str) -> StsPolicy:
    """The body of https://mta-sts.<domain>/.well-known/mta-sts.txt (RFC 8461 3.2).

    Lines end in CRLF or LF; "key: value" with optional white space after the colon;
    values are case-sensitive; unknown keys are ignored (future extensions); `mx` may
    repeat, the other keys may not."""
    seen: dict[str, str] = {}
    mx: list[str] = []
    for n, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        line = line.strip(_WSP)
        if not line:
            continue
        key, colon, value = line.partition(":")
        if not colon or not key or key != key.strip(_WSP):
            raise StsSyntaxError(f"line {n}: not \"key: value\"")
        value = value.strip(_WSP)
        if key == "mx":
            mx.append(_mx_pattern(value, n))
            continue
        if key in ("version", "mode", "max_age"):
            if key in seen:
                raise StsSyntaxError(f"line {n}: {key} given twice")
            seen[key] = value
        elif not _EXT_NAME.fullmatch(key):
            raise StsSyntaxError(f"line {n}: {key!r} is not a field name")
    for key in ("version", "mode", "max_age"):
        if key not in seen:
            raise StsSyntaxError(f"no {key} field")
    if seen["version"] != "STSv1":
        raise StsSyntaxError(f"version {seen['version']!r} (only STSv1 is known)")
    mode = seen["mode"]
    if mode not in MODES:
        raise StsSyntaxError(f"mode {mode!r} (enforce, testing or none)")
    age = seen["max_age"]
    if not age.isascii() or not age.isdigit() or len(age) > 10:
        raise StsSyntaxError(f"max_age {age!r} is not 1 to 10 digits")
    if mode != "none" and not mx:
        raise StsSyntaxError(f"mode {mode} without any mx pattern")
    return StsPolicy(mode, min(int(age), MAX_AGE_LIMIT), tuple(dict.fromkeys(mx)))


def _mx_pattern(value: str, line: int) -> str:
    """RFC 8461 3.2: ["*."] Domain; kept lower case without a trailing dot."""
    p = value.lower().rstrip(".")
    name = p[2:] if p.startswith("*.") else p
    labels = name.split(".")
    if not name or not all(_LABEL.fullmatch(label) for label in labels):
        raise StsSyntaxError(f"line {line}: mx {value!r} is not a domain or *.domain")
    return p


# --- matching ------------------------------------------------------------------------------

def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: "mx1.example.com" matches itself only; "*.example.com" matches one
    more label on the left ("mx1.example.com", not "example.com" nor "a.b.example.com").
    Case and a trailing dot do not count."""
    host = host.lower().rstrip(".")
    pattern = pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return host == pattern


def describe(patterns: Sequence[str]) -> str:
    """"mx1.example.com, *.example.net" for a reply text."""
    return ", ".join(patterns) or "(none)"
