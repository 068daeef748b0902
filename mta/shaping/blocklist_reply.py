"""Does a receiver's reply say our sending IP is on a blocklist, which one, and which IP?

Pure text work, no I/O: `parse(code, enhanced, text)` (or `parse_reply("550 5.7.1 ...")`,
the form events carry) gives a `BlocklistReply` or None. The watch (mta/shaping/dnsbl.py)
counts these per egress source; one reply alone is never a listing.

What counts: a named DNSxL zone ("blocked using zen.spamhaus.org", "listed at
b.barracudacentral.org"), a list's own words or lookup URL (Spamhaus SBL/XBL/PBL/CSS/ZEN,
Barracuda, SpamCop, UCEPROTECT, SORBS, PSBL), a mailbox provider's own IP list (Microsoft's
"on our block list (S3140/S3150)" and "banned sending IP" (5.7.606-5.7.609), Yahoo's
[BLnn] codes, Google's "listed on a blocklist"), and the generic words ("RBL", "DNSBL",
"blacklisted", "on our blocklist") in a 4xx/5xx reply about the connecting host.

What does not: positive replies; address and mailbox replies (5.1.x, 5.2.x, 5.3.x) unless
a list is named outright; "not listed" ("User not listed in public Name & Address Book",
Domino's unknown user); greylisting; a recipient's personal block list ("sender is on the
user's block list"); domain and URI lists (Spamhaus DBL, URIBL, SURBL: they list a link or
a sender domain in the message, i.e. the tenant's content, not our IP); a list refusing
the receiver's own resolver (Spamhaus "open resolver", 127.255.255.254).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

__all__ = ["BlocklistReply", "parse", "parse_reply"]


@dataclass(frozen=True, slots=True)
class BlocklistReply:
    # A stable list name: "spamhaus-zen", "spamhaus-sbl", "spamhaus-xbl", "spamhaus-pbl",
    # "spamhaus-css", "spamhaus", "barracuda", "spamcop", "uceprotect", "sorbs", "psbl",
    # "microsoft", "yahoo", "gmail", "cloudmark", "proofpoint", "comcast", "backscatterer",
    # a zone this table does not know ("bl.example"), or
    # "rbl" when the reply names no list.
    list: str
    zone: str | None = None   # the DNSxL zone the reply names, if any
    ip: str | None = None     # the address the reply names, if any


# Known zones (suffix match) -> list name. Most specific first.
_ZONES: tuple[tuple[str, str], ...] = (
    ("zen.spamhaus.org", "spamhaus-zen"), ("zen.dq.spamhaus.net", "spamhaus-zen"),
    ("sbl-xbl.spamhaus.org", "spamhaus-zen"),
    ("sbl.spamhaus.org", "spamhaus-sbl"), ("sbl.dq.spamhaus.net", "spamhaus-sbl"),
    ("xbl.spamhaus.org", "spamhaus-xbl"), ("xbl.dq.spamhaus.net", "spamhaus-xbl"),
    ("cbl.abuseat.org", "spamhaus-xbl"),
    ("pbl.spamhaus.org", "spamhaus-pbl"), ("pbl.dq.spamhaus.net", "spamhaus-pbl"),
    ("css.spamhaus.org", "spamhaus-css"),
    ("spamhaus.org", "spamhaus"), ("spamhaus.net", "spamhaus"),
    ("barracudacentral.org", "barracuda"),
    ("spamcop.net", "spamcop"),
    ("uceprotect.net", "uceprotect"),
    ("sorbs.net", "sorbs"),
    ("psbl.surriel.com", "psbl"),
)
# Domain and URI lists: a listed link or sender domain, not the connecting IP.
_DOMAIN_ZONES = ("dbl.spamhaus.org", "dbl.dq.spamhaus.net", "zrd.spamhaus.org",
                 "uribl.com", "surbl.org", "dbl.", "uribl.", "multi.surbl")

# A list's own web domain: a lookup URL, not a zone.
_BARE = frozenset({"spamhaus.org", "spamhaus.net", "spamcop.net", "uceprotect.net", "sorbs.net",
                   "barracudacentral.org", "abuseat.org"})
_DOMAIN = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)+"
# "blocked using ZONE", "listed in/at/on/by ZONE", "in a black list at ZONE", "RBL ZONE".
_ZONE_AFTER = re.compile(
    r"(?i)\b(?:blocked\s+using|listed\s+(?:in|at|on|by)|"
    r"black\s?list(?:ed)?\s+at|block\s?list(?:ed)?\s+at|rbl|dnsbl)\s*"
    r"(?:the\s+)?[\"'(<]?(" + _DOMAIN + r")")
_ANY_DOMAIN = re.compile(r"(?i)\b(" + _DOMAIN + r")\b")
# Phrases that name a list without a zone: (pattern, list name). Checked in order.
_NAMED: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.I), n) for p, n in (
    (r"spamhaus\.org/(?:query/)?sbl|\bSBL\d{3,}|spamhaus\s+SBL\b", "spamhaus-sbl"),
    (r"spamhaus\.org/(?:query/)?xbl|spamhaus\s+XBL\b|\bCBL\b", "spamhaus-xbl"),
    (r"spamhaus\.org/(?:query/)?pbl|\bPBL\d{3,}|spamhaus\s+PBL\b", "spamhaus-pbl"),
    (r"spamhaus\.org/css|spamhaus\s+CSS\b", "spamhaus-css"),
    (r"spamhaus\s+ZEN\b", "spamhaus-zen"),
    (r"\bspamhaus\b", "spamhaus"),
    (r"\bbarracuda", "barracuda"),
    (r"\bspamcop\b", "spamcop"),
    (r"\buceprotect\b", "uceprotect"),
    (r"\bsorbs\b", "sorbs"),
    (r"\bpsbl\b", "psbl"),
    # Outlook.com / Hotmail: "part of their network is on our block list (S3150)", and
    # Exchange Online's "banned sending IP" (5.7.606-5.7.609).
    (r"\bS31[45]0\b|banned\s+sending\s+IP|sender\.office\.com", "microsoft"),
    # Yahoo: "[BL21] Connections will not be accepted from IP, because the ip is in
    # Spamhaus's list" is caught above as spamhaus; other [BLnn] codes are Yahoo's.
    (r"\[BL\d\d\]", "yahoo"),
    (r"csi\.cloudmark\.com|\bcloudmark\b", "cloudmark"),
    (r"ipcheck\.proofpoint\.com", "proofpoint"),
    (r"\bcomcast\s+block\b|comcast\.net/smtp-error-codes[^ ]*#BL", "comcast"),
    (r"\bbackscatterer\b", "backscatterer"),
))
# Generic words: a list that the reply does not name.
_GENERIC = re.compile(
    r"(?i)\b(?:rbl|dnsbl|dnsxl|rbls|blocked\s+using|black\s?listed|block\s?listed|"
    r"(?:on|in)\s+(?:a|an|our|the|one\s+or\s+more|several)\s+(?:[\w-]+\s+){0,3}"
    r"(?:black|block|deny|reputation)\s?lists?|"
    r"(?:ip|address|host|client)\b[^.;]{0,40}\blisted\s+(?:in|on|at|by))\b")
# Not about our IP: a recipient's own list, a domain, greylisting, "not listed".
_NOT_IP = re.compile(
    r"(?i)(?:(?:recipient|user|mailbox|owner)(?:'s)?\s+(?:personal\s+)?(?:black|block)\s?list|"
    r"blocked\s+by\s+(?:the\s+)?(?:recipient|user)|"
    r"(?:sender|from)\s+(?:address|domain)\s[^.;]{0,30}(?:black|block)\s?listed|"
    r"\bdomain\s+(?:\S+\s+)?(?:is\s+)?(?:black|block)?\s?listed|\bURIBL\b|\bSURBL\b|"
    r"\bDBL\b|\bURL\b[^.;]{0,30}listed|\blink\b[^.;]{0,30}listed)")
# Spamhaus refusing the receiver's resolver (public or over the free volume): the
# receiver's problem, whatever zone the reply names (return codes 127.255.255.252-255).
_LIST_ERROR = re.compile(r"(?i)open\s+resolver|127\.255\.255\.25[2-5]|spamhaus\.org/returnc/")
_NOT_LISTED = re.compile(r"(?i)\bnot\s+(?:be\s+)?listed\b|\bunlisted\b")
_IPV4 = re.compile(r"(?<![\d.])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})"
                   r"(?![\d.]*\d)")
_IPV6 = re.compile(r"(?i)(?<![\w:])((?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4})(?![\w:])")
_REPLY = re.compile(r"^\s*(\d{3})(?:[ -]+([245]\.\d{1,3}\.\d{1,3}))?(?:[ -](.*))?$", re.S)
_CONT = re.compile(r"(?m)(?:^|\s/\s)\d{3}[ -](?:[245]\.\d{1,3}\.\d{1,3}\s)?")


def _zone_list(zone: str) -> str | None:
    """The list name for a zone we know, "" for a domain/URI list, None if unknown."""
    zone = zone.lower().strip(".")
    if any(zone == d or zone.endswith("." + d) or zone.startswith(d) for d in _DOMAIN_ZONES):
        return ""
    for suffix, name in _ZONES:
        if zone == suffix or zone.endswith("." + suffix):
            return name
    return None


def _named_ip(text: str) -> str | None:
    """The first address in the text that is not a list's return code (127.0.0.x)."""
    for m in _IPV4.finditer(text):
        ip = m.group(1)
        if not ip.startswith("127.0.0.") or re.search(
                r"(?i)(?:\[|client|host|\bip\b|from|address)\W{0,3}$", text[:m.start()]):
            return ip
    for m in _IPV6.finditer(text):
        try:
            return str(ipaddress.IPv6Address(m.group(1)))
        except ValueError:
            continue
    return None


def parse(code: int, enhanced: str | None, text: str) -> BlocklistReply | None:
    """A 4xx/5xx reply that says the sending IP is on a blocklist, or None."""
    if not 400 <= code < 600 or not text:
        return None
    # Continuation lines of a multi-line reply ("550-5.7.1 ..." or " / 550-5.7.1 ").
    text = _CONT.sub(" ", text)
    if _LIST_ERROR.search(text):
        return None
    ip = _named_ip(text)
    # 1. A named zone: the strongest evidence, whatever the status code says.
    for m in _ZONE_AFTER.finditer(text):
        zone = m.group(1).lower().strip(".")
        if _IPV4.fullmatch(zone):
            continue
        name = _zone_list(zone)
        if name == "":
            return None  # a domain/URI list: the message's content, not our IP
        if name is not None:
            return BlocklistReply(name, None if zone in _BARE else zone, ip)
        if not zone.startswith("www."):
            return BlocklistReply(zone, zone, ip)
    # ... or a list's own domain anywhere (its lookup URL, a zone after other words).
    for m in _ANY_DOMAIN.finditer(text):
        dom = m.group(1).lower()
        name = _zone_list(dom)
        if name == "":
            return None
        if name:
            if dom.startswith("www.") or dom in _BARE:  # a web page names the list only
                return BlocklistReply(_named_list(text) or name, None, ip)
            return BlocklistReply(name, dom, ip)
    if _NOT_IP.search(text):
        return None
    # 2. A list named in words, or a provider's own list.
    named = _named_list(text)
    if named is not None:
        return BlocklistReply(named, None, ip)
    # 3. Generic words, only where the reply is about the sender (not an address or mailbox).
    if enhanced is not None and enhanced.split(".")[1] in ("1", "2", "3"):
        return None
    if _NOT_LISTED.search(text) and not re.search(r"(?i)\brbl\b|\bdnsbl\b", text):
        return None
    if _GENERIC.search(text):
        return BlocklistReply(_provider(text) or "rbl", None, ip)
    return None


def _named_list(text: str) -> str | None:
    for pattern, name in _NAMED:
        if pattern.search(text):
            return name
    return None


def _provider(text: str) -> str | None:
    """A provider's own unnamed list, told by its hostnames or help links."""
    t = text.lower()
    if "gsmtp" in t or "google.com" in t or "gmail" in t:
        return "gmail"
    if "yahoo" in t or "aol.com" in t:
        return "yahoo"
    if "outlook.com" in t or "hotmail" in t or "microsoft" in t or "office.com" in t:
        return "microsoft"
    return None


def parse_reply(reply: str) -> BlocklistReply | None:
    """`parse` of a reply as events carry it: "550 5.7.1 text" (lines joined by " / ")."""
    m = _REPLY.match(reply or "")
    if m is None:
        return None
    return parse(int(m.group(1)), m.group(2), m.group(3) or "")
