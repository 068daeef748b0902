"""mta.rfc5322.mailbox_addresses against its twin, the stdlib's getaddresses: the fast form
must give exactly what the full parser gives, on every value it accepts and on the others."""

from __future__ import annotations

import itertools
from email.utils import getaddresses

from mta.rfc5322 import _SIMPLE, mailbox_addresses

NAMES = ["", "Shop", "J. Smith", "Shop Team", "=?utf-8?q?caf=C3=A9?=", '"Quoted, Name"',
         "Name (comment)", "[x]", "a@b", "Ünïcode", "Sm!th#", "O'Brien", "Multi  Space"]
ADDRS = ["orders@shop.test", "a@b", "a.b+c@sub.shop.test", "a@b.", "UPPER@Shop.Test",
         "a@[192.0.2.1]", "a@@b", "@b", "a@", "no-at", "a b@c", '"q"@shop.test',
         "a@b,c@d", "a@b;"]


def _values() -> list[str]:
    out = []
    for name, addr in itertools.product(NAMES, ADDRS):
        out += [f"{name} <{addr}>", f"{name}<{addr}>", addr, f"<{addr}>"]
    out += ["a@b, c@d", "Group: a@b, c@d;", "undisclosed-recipients:;", "", "<>",
            "Name <a@b> <c@d>", "a@b (comment)"]
    return out


def test_the_fast_form_reads_as_getaddresses() -> None:
    values = _values()
    fast = 0
    for value in values:
        fast += _SIMPLE.fullmatch(value) is not None
        assert mailbox_addresses(value) == [a for _, a in getaddresses([value])], value
    assert fast > len(values) // 4  # the common forms do take the fast path


def test_from_fields_are_found_unfolded_in_order() -> None:
    from mta.rfc5322 import from_fields

    head = (b"To: x@y\r\nFROM: Shop\r\n\t<orders@shop.test>\r\nSubject: from: no\r\n"
            b"from:b@c.test\r\n")
    assert from_fields(head) == ["Shop\t<orders@shop.test>", "b@c.test"]
    assert from_fields(b"To: x@y\r\n") == []
