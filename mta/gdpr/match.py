"""Finding one address in text and bytes: case-insensitively, as a whole address (not
inside a longer one: erasing b@x.test leaves ab@x.test alone), and replacing it."""

from __future__ import annotations

import re

__all__ = ["Matcher", "normalise"]

# What may stand next to an address inside a longer one (RFC 5322 atext, dots, hyphens).
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~.-"


def normalise(address: str) -> str:
    """"<User@Example.COM>" -> "user@example.com"; ValueError if not an address."""
    a = address.strip().strip("<>").strip().lower()
    local, at, domain = a.rpartition("@")
    if not at or not local or not domain or "." not in domain or any(
            c.isspace() or c in "<>\"\\,;" for c in a):
        raise ValueError(f"not an address: {address!r}")
    return a


class Matcher:
    def __init__(self, address: str) -> None:
        self.address = normalise(address)
        body = re.escape(self.address)
        pattern = rf"(?<![{_ATEXT}]){body}(?![A-Za-z0-9-]|\.[A-Za-z0-9])"
        self._text = re.compile(pattern, re.IGNORECASE)
        self._bytes = re.compile(pattern.encode(), re.IGNORECASE)

    def same(self, value: object) -> bool:
        """`value` is this address (any case, angle brackets allowed)."""
        return isinstance(value, str) and value.strip().strip("<>").lower() == self.address

    def in_text(self, text: str) -> bool:
        return self._text.search(text) is not None

    def in_bytes(self, data: bytes) -> bool:
        return self._bytes.search(data) is not None

    def sub_text(self, text: str, alias: str) -> str:
        return self._text.sub(alias, text)

    def sub_bytes(self, data: bytes, alias: str) -> bytes:
        return self._bytes.sub(alias.encode(), data)
