"""scrypt hashes and the AUTH failure window (auth.py); trace and required headers
added at end of DATA (cleanup.py: RFC 5321 4.4, RFC 3848, RFC 5322 3.6)."""

from __future__ import annotations

import re

from mta.config import UserConfig
from mta.smtp.auth import Authenticator, AuthFailures, hash_password, verify_password
from mta.smtp.cleanup import add_headers
from mta.smtp.handler import SessionInfo


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_hash_format_is_scrypt_ln_r_p_salt_hash():
    h = hash_password("pw", ln=4)
    assert re.fullmatch(r"\$scrypt\$ln=4,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", h)
    assert hash_password("pw", ln=4) != h  # a fresh salt each time


def test_verify_password():
    h = hash_password("correct horse", ln=4)
    assert verify_password("correct horse", h)
    assert not verify_password("wrong", h)
    for bad in ("", "$scrypt$", "$bcrypt$x$y$z", "$scrypt$ln=99,r=8,p=1$AAAA$AAAA",
                h.replace("ln=4", "ln=x")):
        assert not verify_password("correct horse", bad)


async def test_authenticator_returns_the_users_tenant():
    auth = Authenticator({"alice": UserConfig(tenant="acme",
                                              password=hash_password("pw", ln=4))})
    assert (await auth.verify("alice", "pw")).tenant == "acme"
    assert not (await auth.verify("alice", "nope")).ok
    assert not (await auth.verify("mallory", "pw")).ok


def test_failures_lock_one_user_from_one_address_within_the_window_only():
    clock = Clock()
    f = AuthFailures(max_failures=3, window=60, clock=clock)
    for _ in range(2):
        f.record_failure("192.0.2.1", "alice")
    assert not f.is_locked("192.0.2.1", "alice")
    assert f.record_failure("192.0.2.1", "alice") == 3
    assert f.is_locked("192.0.2.1", "alice")
    # Another user behind the same address, and alice elsewhere, are not locked.
    assert not f.is_locked("192.0.2.1", "bob") and not f.is_locked("192.0.2.2", "alice")
    clock.now += 60.001  # the window has passed (tolerance: 1 ms past the edge)
    assert not f.is_locked("192.0.2.1", "alice")


def test_address_cap_counts_every_user_and_a_success_clears_the_pair():
    clock = Clock()
    f = AuthFailures(max_failures=3, window=60, clock=clock)  # address cap: 30
    assert f.max_per_address == 30
    for i in range(29):
        f.record_failure("192.0.2.1", f"user{i}")
    assert not f.address_over_cap("192.0.2.1")
    f.record_failure("192.0.2.1", "alice")
    assert f.address_over_cap("192.0.2.1") and not f.address_over_cap("192.0.2.2")
    f.record_failure("192.0.2.1", "alice")
    f.record_success("192.0.2.1", "alice")
    assert f.record_failure("192.0.2.1", "alice") == 1


def test_failures_are_slowed_more_and_more():
    f = AuthFailures(max_failures=5, window=60, delay=1.0, clock=Clock())
    assert [f.delay_for(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 16, 16]
    assert f.delay_for(1, over_cap=True) == 16


def test_failure_table_is_bounded():
    clock = Clock()
    f = AuthFailures(max_failures=1, window=60, clock=clock, max_clients=10)
    for i in range(50):
        f.record_failure(f"192.0.2.{i}", "u" * 5000)
    assert len(f._pairs.table) <= 10 and len(f._addresses.table) <= 10
    assert all(len(user) <= 256 for _, user in f._pairs.table)
    assert f.is_locked("192.0.2.49", "u" * 5000)


INFO = SessionInfo("192.0.2.9", 1234, helo="client.test", esmtp=True)


def test_rfc5321_4_4_received_is_prepended_with_for_a_single_recipient():
    out = add_headers(b"Subject: x\r\nMessage-ID: <a@b>\r\nDate: today\r\n\r\nbody\r\n", INFO,
                      hostname="mx.test", recipients=["r@x.test"], queue_id="0A1B",
                      now=0)
    first, rest = out.split(b"Subject: x", 1)
    assert re.fullmatch(rb"Received: from client\.test \(\[192\.0\.2\.9\]\)\r\n"
                        rb"\tby mx\.test \(mta\) with ESMTP id 0A1B\r\n"
                        rb"\tfor <r@x\.test>; \w{3}, \d\d? \w{3} 19\d\d [\d:]{8} [+-]\d{4}\r\n",
                        first), first
    assert rest == b"\r\nMessage-ID: <a@b>\r\nDate: today\r\n\r\nbody\r\n"


def test_rfc3848_with_protocol_names():
    from mta.smtp.cleanup import protocol_name
    tls_auth = SessionInfo("192.0.2.9", 1, esmtp=True, tls=True, auth_user="alice")
    assert protocol_name(tls_auth, False) == "ESMTPSA"
    assert protocol_name(tls_auth, True) == "UTF8SMTPSA"
    assert protocol_name(SessionInfo("192.0.2.9", 1), False) == "SMTP"


def test_rfc5322_3_6_missing_message_id_and_date_are_added_to_the_header_block():
    out = add_headers(b"Subject: x\r\n\r\nmessage-id: in the body\r\n", INFO,
                      hostname="mx.test", recipients=["a@x", "b@x"])
    head, body = out.split(b"\r\n\r\n", 1)
    assert re.search(rb"\r\nMessage-ID: <[0-9a-f.]+@mx\.test>\r\nDate: ", head)
    assert b"\tfor <" not in head  # several recipients: not disclosed
    assert body == b"message-id: in the body\r\n"


def test_message_without_header_block_still_gets_headers():
    out = add_headers(b"", INFO, hostname="mx.test", recipients=["a@x"])
    assert b"Message-ID: <" in out and b"Date: " in out
