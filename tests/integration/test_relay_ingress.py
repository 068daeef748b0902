"""The foundation, end to end through the real daemon: relay over SMTP, 250 only when the
message is in the spool, queue operations through the CLI, the events log, SIGTERM."""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import subprocess

import pytest

from mta.smtp.auth import hash_password
from tests.support.tls import write_self_signed

MSG = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello\r\n"
QUEUED = re.compile(rb"Ok: queued as ([0-9a-f]{18})")


def _send(port: int, sender: str, rcpts: list[str], msg: bytes = MSG) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.ehlo("client.test")
        s.mail(sender)
        for r in rcpts:
            code, _ = s.rcpt(r)
            assert code == 250
        code, reply = s.data(msg)
    assert code == 250, reply
    m = QUEUED.search(reply)
    assert m, reply
    return m.group(1).decode()


def test_relay_from_relay_network_is_queued_and_listed(mta_factory):
    mta = mta_factory()
    msg_id = _send(mta.smtp_port, "a@sender.test", ["b@dest.test", "c@dest.test"])
    listing = mta.queue_list()
    assert [m["id"] for m in listing] == [msg_id]
    m = listing[0]
    assert m["tenant"] == "default"
    assert m["mail_from"] == "a@sender.test"
    assert [r["address"] for r in m["recipients"]] == ["b@dest.test", "c@dest.test"]
    assert {r["state"] for r in m["recipients"]} == {"queued"}

    # The human listing shows it too.
    proc = mta.cli("queue", "list")
    assert proc.returncode == 0 and msg_id in proc.stdout

    received = mta.wait_events(lambda e: e["event"] == "received" and e["id"] == msg_id)
    assert sorted(e["recipient"] for e in received) == ["b@dest.test", "c@dest.test"]
    assert all(e["tenant"] == "default" for e in received)


def test_queue_show_hold_release_delete_through_the_cli(mta_factory):
    mta = mta_factory()
    msg_id = _send(mta.smtp_port, "a@sender.test", ["b@dest.test"])
    shown = json.loads(mta.cli("queue", "show", msg_id).stdout)
    assert shown["id"] == msg_id and shown["size"] > len(MSG)  # Received: was added

    assert mta.cli("queue", "hold", msg_id).stdout.strip() == f"{msg_id}: held"
    assert json.loads(mta.cli("queue", "show", msg_id).stdout)["state"] == "held"
    assert mta.cli("queue", "release", msg_id).stdout.strip() == f"{msg_id}: released"
    assert json.loads(mta.cli("queue", "show", msg_id).stdout)["state"] == "queued"
    assert mta.cli("queue", "delete", msg_id).stdout.strip() == f"{msg_id}: deleted"
    proc = mta.cli("queue", "show", msg_id)
    assert proc.returncode == 1
    assert f"no message {msg_id} in the queue" in proc.stderr
    assert mta.queue_list() == []


def test_queue_commands_report_a_bad_id_and_an_absent_daemon(mta_factory):
    mta = mta_factory()
    proc = mta.cli("queue", "hold", "not-an-id!")
    assert proc.returncode == 1 and "not a queue id" in proc.stderr
    mta.terminate()
    proc = mta.cli("queue", "list")
    assert proc.returncode == 69
    assert "cannot reach the daemon" in proc.stderr


def test_admin_api_needs_the_bearer_token(mta_factory):
    import urllib.error
    import urllib.request

    mta = mta_factory()
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}/api/v1/admin/queue")
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(req, timeout=10)
    assert exc.value.code == 401
    assert json.loads(exc.value.read())["error"]["code"] == "unauthorized"


def test_auth_then_relay_as_the_users_tenant_with_swaks(mta_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key)
    mta = mta_factory(f"""
[tenants.acme]
[users.app1]
tenant = "acme"
password = "{hash_password('s3cret-pw', ln=10)}"
""", smtp_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"\nrelay_networks = []')

    proc = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(mta.smtp_port), "--tls",
         "--auth", "PLAIN", "--auth-user", "app1", "--auth-password", "s3cret-pw",
         "--from", "app@acme.test", "--to", "someone@dest.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Ok: queued as" in proc.stdout
    [m] = mta.queue_list()
    assert m["tenant"] == "acme" and m["auth_user"] == "app1"

    # Without AUTH, a client outside relay_networks may not relay.
    proc = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(mta.smtp_port),
         "--from", "x@spam.test", "--to", "victim@dest.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "530 5.7.0" in proc.stdout

    # A wrong password is refused with 535 5.7.8.
    proc = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(mta.smtp_port), "--tls",
         "--auth", "LOGIN", "--auth-user", "app1", "--auth-password", "wrong",
         "--from", "app@acme.test", "--to", "someone@dest.test", "--timeout", "20"],
        capture_output=True, text=True, timeout=60)
    assert "535 5.7.8" in proc.stdout


def test_starttls_then_auth_with_smtplib(mta_factory, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key)
    mta = mta_factory(f"""
[tenants.acme]
[users.app1]
tenant = "acme"
password = "{hash_password('pw-123456', ln=10)}"
""", smtp_extra=f'tls_cert = "{cert}"\ntls_key = "{key}"')
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        assert "PLAIN" in s.esmtp_features["auth"]
        s.login("app1", "pw-123456")
        s.sendmail("app@acme.test", ["x@dest.test"], MSG)
    [m] = mta.queue_list()
    assert m["tenant"] == "acme"


def test_sigterm_drains_and_exits_0_and_the_queue_survives(mta_factory):
    mta = mta_factory()
    msg_id = _send(mta.smtp_port, "a@sender.test", ["b@dest.test"])
    assert mta.terminate() == 0
    mta.start()
    assert [m["id"] for m in mta.queue_list()] == [msg_id]


def test_sighup_reloads_and_a_bad_config_is_refused(mta_factory):
    import signal
    import time

    mta = mta_factory()
    text = mta.config_path.read_text()
    mta.config_path.write_text(text.replace("[smtp]\n", "[smtp]\nmax_recipients = 1\n", 1))
    mta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in mta.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.ehlo("c")
        s.mail("a@sender.test")
        assert s.rcpt("b@dest.test")[0] == 250
        code, text_ = s.rcpt("c@dest.test")
        assert (code, text_[:5]) == (452, b"4.5.3")
    # A broken config on reload is refused; the daemon keeps serving.
    mta.config_path.write_text(text + "\n[smtp]\nbogus = 1\n")
    mta.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reload refused" not in mta.stderr and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "reload refused" in mta.stderr
    _send(mta.smtp_port, "a@sender.test", ["b@dest.test"])


def test_systemd_notify_ready_then_stopping(tmp_path):
    """Type=notify: READY=1 once listening, STOPPING=1 on SIGTERM (sd_notify(3))."""
    import socket

    from tests.support.daemon import MtaProcess

    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(20)
        mta = MtaProcess(tmp_path)
        mta.env["NOTIFY_SOCKET"] = str(path)
        try:
            mta.start()
            assert b"READY=1" in sock.recv(4096)
            assert mta.terminate() == 0
            assert sock.recv(4096).startswith(b"STOPPING=1")
        finally:
            mta.kill()
