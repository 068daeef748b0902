"""Addresses in message header fields (RFC 5322 3.4): `from_fields(head)`,
`mailbox_addresses(value)`.

Owns finding the From fields of a header block and reading the addresses out of an
address-list field value such as From's. Most mail
names one mailbox as `Name <a@b>` or `a@b`; a regular expression reads those (~1 us) and
everything else (groups, quoted or commented names, several mailboxes, domain literals)
goes to the stdlib's full parser, `email.utils.getaddresses` (~9 us), whose answer the
fast form must equal (tests/test_rfc5322.py checks it on a corpus).
"""

from __future__ import annotations

import re
from email.utils import getaddresses

__all__ = ["from_fields", "mailbox_addresses", "raw_from_fields", "unfold"]

_FROM = re.compile(rb"^from[ \t]*:(.*(?:\r?\n[ \t].*)*)", re.IGNORECASE | re.MULTILINE)
_FOLD = re.compile(rb"\r?\n")

# A display name of plain words (no specials, no brackets) and one angle address, or a
# bare addr-spec; each address exactly one "@" with no specials on either side.
_ADDR = r'[^<>"@\s(),;:\\\[\]]+@[^<>"@\s(),;:\\\[\]]+'
_SIMPLE = re.compile(rf'(?:[^"<>@,;:()\\\[\]]*<({_ADDR})>|({_ADDR}))')


def from_fields(head: bytes) -> list[str]:
    """The value of each From field in a header block, unfolded (RFC 5322 2.2.3) and
    stripped, in order (RFC 5322 3.6 allows one; senders of forged mail add more)."""
    return [unfold(v) for v in raw_from_fields(head, len(head))]


def raw_from_fields(data: bytes, end: int) -> list[bytes]:
    """The From fields' values as they stand in `data[:end]` (the header block), folded:
    what sender identity keys its answers on without copying or decoding them."""
    return _FROM.findall(data, 0, end)


def unfold(value: bytes) -> str:
    """A raw field value unfolded and stripped, as text."""
    return _FOLD.sub(b"", value).strip().decode("utf-8", "replace")


def mailbox_addresses(value: str) -> list[str]:
    """The addresses of the field value's mailboxes, as getaddresses gives them ("" for a
    mailbox it cannot read); the value unfolded, without the field name."""
    m = _SIMPLE.fullmatch(value)
    if m is not None:
        return [m.group(1) or m.group(2)]
    return [addr for _, addr in getaddresses([value])]
