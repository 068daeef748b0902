"""SMTP commands: one `Command` value for every verb, parsed from one command line.

Owns the RFC 5321 command grammar (section 4.1.1) and the path grammar (4.1.2): reverse and
forward paths with source routes (accepted and stripped, 4.1.1.3 / appendix C), quoted local
parts, address literals (4.1.3), `<>` and `<Postmaster>`, and every ESMTP parameter as
`KEY=VALUE` (keys upper-cased). It does NOT decide which parameters are acceptable: that is
the session's job (so DSN, SIZE, BODY... are each owned by the code that implements them).
UTF-8 addresses (RFC 6531) are parsed and flagged with `utf8=True`; the session refuses them
without SMTPUTF8. This is the path grammar, not the RFC 5322 header grammar.

Syntax errors raise `CommandError`, which carries the exact reply to send.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from mta.rfc5321.reply import Reply

__all__ = [
    "Command",
    "CommandError",
    "Verb",
    "parse_command",
    "parse_path",
    "xtext_decode",
    "xtext_encode",
]


class Verb(enum.Enum):
    __hash__ = object.__hash__  # members are singletons; Enum's hash runs Python code
    EHLO = "EHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    EXPN = "EXPN"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    BDAT = "BDAT"  # RFC 3030 CHUNKING
    # Not SMTP at all: a browser or proxy probe (Postfix smtpd_forbidden_commands).
    FORBIDDEN = "FORBIDDEN"


_VERBS = {v.value: v for v in Verb if v is not Verb.FORBIDDEN}
_FORBIDDEN = frozenset({"GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS"})


@dataclass(frozen=True, slots=True)
class Command:
    verb: Verb
    # The raw argument text: EHLO domain, AUTH mechanism and initial response, VRFY string.
    arg: str = ""
    # MAIL/RCPT: the path without angle brackets or source route; "" is the null path <>.
    address: str | None = None
    # ESMTP parameters, keys upper-cased, values as sent (xtext still encoded); "" if the
    # keyword had no "=value" (SMTPUTF8).
    params: dict[str, str] = field(default_factory=dict)
    # The address holds non-ASCII characters: legal only in an SMTPUTF8 transaction.
    utf8: bool = False


class CommandError(Exception):
    """A command line that does not parse; `reply` is what the server answers."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(str(reply))
        self.reply = reply


UNRECOGNIZED = Reply(500, "5.5.2", "Error: command not recognized")
BAD_SYNTAX = Reply(501, "5.5.2", "Syntax error in parameters or arguments")
BAD_SENDER = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT = Reply(501, "5.1.3", "Bad recipient address syntax")
BAD_PARAMETER = Reply(501, "5.5.4", "Invalid ESMTP parameter syntax")

# --- RFC 5321 4.1.2 path grammar, RFC 6531 3.3 for UTF-8 -------------------------------
# UTF8-non-ascii is written [^\x00-\x7f] beside each ASCII class, not as a \x80-\U0010ffff
# range inside it: the big ranges made this pattern take ~100 ms to compile, at every start.
_NON_ASCII = r"[^\x00-\x7f]"
# atext (RFC 5322 3.2.3) plus UTF8-non-ascii; Dot-string = Atom *("." Atom)
_ATEXT = rf"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{{|}}~]|{_NON_ASCII})"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
# Quoted-string = DQUOTE *( qtextSMTP / quoted-pairSMTP ) DQUOTE
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|{_NON_ASCII}|\\[\x20-\x7e])*"'
# sub-domain = Let-dig [Ldh-str]; U-labels allowed (checked as UTF-8 by the session)
_LETDIG = rf"(?:[A-Za-z0-9]|{_NON_ASCII})"
_SUBDOMAIN = rf"{_LETDIG}(?:(?:[A-Za-z0-9\-]|{_NON_ASCII})*{_LETDIG})?"
_DOMAIN = rf"{_SUBDOMAIN}(?:\.{_SUBDOMAIN})*"
_LITERAL = r"\[[^\[\]\\\s]+\]"
_ADL = rf"@{_DOMAIN}(?:,@{_DOMAIN})*:"

# The fast path: a plain <local@domain>, which is nearly every real command.
_FAST_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?"
_FAST_RE = re.compile(
    rf"<([A-Za-z0-9_+\-=]+(?:\.[A-Za-z0-9_+\-=]+)*@{_FAST_LABEL}(?:\.{_FAST_LABEL})*)>")
_PATH_RE = re.compile(
    rf"<(?:{_ADL})?((?:{_DOT_STRING}|{_QUOTED})@(?:{_DOMAIN}|{_LITERAL}))>")
_POSTMASTER_RE = re.compile(r"<(postmaster)>", re.IGNORECASE)
# esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); esmtp-value = 1*(%d33-60 / %d62-126)
# (RFC 6531 3.3 widens esmtp-value to UTF-8).
_PARAM_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9\-]*)(?:=([\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+))?")

# RFC 5321 4.1.1.11: local parts beyond 64 octets and domains beyond 255 may be refused;
# we only bound the whole path (256, 4.5.3.1.3) so an absurd one never reaches policy.
_MAX_PATH = 256


def _valid_literal(lit: str) -> bool:
    """RFC 5321 4.1.3: [IPv4], [IPv6:...] or a General-address-literal tag:content."""
    body = lit[1:-1]
    if body[:5].lower() == "ipv6:":
        try:
            ipaddress.IPv6Address(body[5:])
        except ValueError:
            return False
        return True
    if ":" in body:  # General-address-literal = Standardized-tag ":" 1*dcontent
        tag, _, content = body.partition(":")
        return bool(re.fullmatch(r"[A-Za-z0-9\-]*[A-Za-z0-9]", tag)) and bool(content)
    try:
        ipaddress.IPv4Address(body)
    except ValueError:
        return False
    return True


def parse_path(text: str, *, allow_null: bool, allow_postmaster: bool) -> tuple[str, int]:
    """Parse a path at the start of `text`; return (address, end index).

    Raises ValueError when `text` does not start with a valid path.
    """
    m = _FAST_RE.match(text)
    if m is not None:
        return m.group(1), m.end()
    if allow_null and text.startswith("<>"):
        return "", 2
    if allow_postmaster:
        m = _POSTMASTER_RE.match(text)
        if m is not None:
            return m.group(1), m.end()
    m = _PATH_RE.match(text)
    if m is None:
        raise ValueError("bad path")
    address = m.group(1)
    if address.endswith("]") and not _valid_literal(address[address.rindex("@") + 1:]):
        raise ValueError("bad address literal")
    return address, m.end()


def _parse_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for word in text.split(" "):
        if not word:
            continue  # tolerate doubled spaces
        m = _PARAM_RE.fullmatch(word)
        if m is None:
            raise CommandError(BAD_PARAMETER)
        key = m.group(1).upper()
        if key in params:  # RFC 1869 6: a keyword may appear at most once
            raise CommandError(Reply(501, "5.5.4", f"Duplicate ESMTP parameter {key}"))
        params[key] = m.group(2) or ""
    return params


def _parse_mail_rcpt(verb: Verb, rest: str) -> Command:
    # RFC 5321 4.1.1.2/3: "MAIL FROM:" Reverse-path / "RCPT TO:" Forward-path. Spaces after
    # the colon are a common violation every MTA tolerates.
    prefix = "FROM:" if verb is Verb.MAIL else "TO:"
    if rest[:len(prefix)].upper() != prefix:
        want = "MAIL FROM:<address>" if verb is Verb.MAIL else "RCPT TO:<address>"
        raise CommandError(Reply(501, "5.5.2", f"Syntax: {want}"))
    text = rest[len(prefix):].lstrip(" ")
    bad = BAD_SENDER if verb is Verb.MAIL else BAD_RECIPIENT
    # Bound the input before any regex runs on it (and refuse absurd paths early).
    if not 0 < text.find(">") < _MAX_PATH:
        raise CommandError(bad)
    try:
        address, end = parse_path(
            text, allow_null=verb is Verb.MAIL, allow_postmaster=verb is Verb.RCPT)
    except ValueError:
        raise CommandError(bad) from None
    tail = text[end:]
    if tail and tail[0] != " ":
        raise CommandError(bad)
    params = _parse_params(tail) if tail.strip(" ") else {}
    return Command(verb, rest, address, params, not address.isascii())


def parse_command(line: bytes) -> Command:
    """Parse one command line (without its CRLF) into a `Command`.

    Raises `CommandError` with the reply for an unknown verb or bad syntax.
    """
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(Reply(500, "5.5.2", "Error: invalid UTF-8 in command")) from None
    if not text.isprintable():
        # A CR, NUL, TAB... inside a command: never valid, and a header-injection vector
        # (the EHLO name goes into Received:).
        raise CommandError(Reply(500, "5.5.2", "Error: control character in command"))
    # RFC 5321 4.1.1: verbs are case-insensitive and separated from arguments by one SP.
    space = text.find(" ")
    word, rest = (text, "") if space < 0 else (text[:space], text[space + 1:])
    verb = _VERBS.get(word.upper())
    if verb is None:
        if word.upper() in _FORBIDDEN:
            return Command(Verb.FORBIDDEN, text)
        raise CommandError(UNRECOGNIZED)
    if verb is Verb.MAIL or verb is Verb.RCPT:
        return _parse_mail_rcpt(verb, rest)
    rest = rest.strip(" ")
    if verb in (Verb.DATA, Verb.RSET, Verb.QUIT, Verb.STARTTLS) and rest:
        raise CommandError(BAD_SYNTAX)
    return Command(verb, rest)


# --- RFC 3461 4: xtext, for ENVID, ORCPT and AUTH= -----------------------------------------
_XTEXT_RE = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_HEX_RE = re.compile(r"\+([0-9A-F]{2})")
_ANY_HEX_RE = re.compile(r"\+([0-9A-Fa-f]{2})")


def xtext_decode(value: str, *, strict: bool = True) -> str:
    """Decode xtext (`+2B` -> `+`). Strict (a parameter as a client sent it): ValueError
    if `value` is not valid xtext. Not strict (a stored value written into a DSN): every
    `+XX` is decoded and anything else kept, so the DSN is written whatever was stored."""
    if strict and _XTEXT_RE.fullmatch(value) is None:
        raise ValueError(f"invalid xtext {value!r}")
    if "+" not in value:
        return value
    return (_HEX_RE if strict else _ANY_HEX_RE).sub(lambda m: chr(int(m.group(1), 16)), value)


def xtext_encode(value: str) -> str:
    """Encode as xtext: "+", "=" and characters outside 33..126 become +XX."""
    return "".join(
        c if 33 <= ord(c) <= 126 and c not in "+=" else "".join(
            f"+{b:02X}" for b in c.encode("utf-8"))
        for c in value)
