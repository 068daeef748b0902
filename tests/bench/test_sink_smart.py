"""bench/sink.py's smart mode answers as configured: 550 for the chosen addresses (always
the same ones), the slow-down text, 421 greetings, and a slow domain's replies later."""

from __future__ import annotations

import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemon import free_port

REPO = Path(__file__).resolve().parents[2]


def _sink(*args: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "sink.py"), "--listen",
                             f"127.0.0.1:{port}", "--report", "60", *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("sink listening")
    return proc, port


def _rcpt(port: int, rcpt: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("t")
        s.mail("a@b.test")
        return s.rcpt(rcpt)


def test_refusals_are_per_address_and_slow_domains_answer_later():
    proc, port = _sink("--mix", "550:0.5", "--latency", "slow.test=300,*=0")
    try:
        fates = {f"u{i}@x.test": _rcpt(port, f"u{i}@x.test")[0] for i in range(30)}
        assert set(fates.values()) == {250, 550}
        again = {a: _rcpt(port, a)[0] for a in fates}
        assert again == fates  # a refused address is refused every time
        t0 = time.monotonic()
        code, _ = _rcpt(port, "someone@slow.test")
        assert time.monotonic() - t0 >= 0.3 and code in (250, 550)
    finally:
        proc.terminate()
        proc.wait(10)


def test_slow_down_and_421_greetings():
    proc, port = _sink("--mix", "slow:1.0")
    try:
        code, text = _rcpt(port, "a@x.test")
        assert code == 451 and b"slow down" in text
    finally:
        proc.terminate()
        proc.wait(10)
    proc, port = _sink("--mix", "421:1.0")
    try:
        try:
            smtplib.SMTP("127.0.0.1", port, timeout=10)
        except smtplib.SMTPConnectError as e:
            assert e.smtp_code == 421
        else:
            raise AssertionError("greeted")
    finally:
        proc.terminate()
        proc.wait(10)


def test_chunking_takes_bdat_pipelined_with_the_envelope():
    # --chunking: CHUNKING offered; MAIL, RCPT and BDAT LAST in one write get their three
    # replies, a chunk split over reads is still one message, and BDAT with no accepted
    # recipient is refused after its chunk is read.
    proc, port = _sink("--chunking")
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
            s.ehlo("t")
            assert s.has_extn("chunking")
            body = b"Subject: x\r\n\r\nhello\r\n"
            sock = s.sock
            sock.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n"
                         b"BDAT %d LAST\r\n" % len(body) + body[:5])
            time.sleep(0.05)
            sock.sendall(body[5:] + b"MAIL FROM:<a@b.test>\r\nBDAT 2 LAST\r\nxy")
            replies = [s.getreply() for _ in range(5)]
            assert [code for code, _ in replies] == [250, 250, 250, 250, 554]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert "messages=1 " in out
