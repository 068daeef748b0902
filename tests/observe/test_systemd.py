"""systemd notification from the real daemon, through a real datagram socket standing in
for the manager's $NOTIFY_SOCKET: READY=1 with a STATUS= line, WATCHDOG=1 every half
$WATCHDOG_USEC, RELOADING=1 (with MONOTONIC_USEC) then READY=1 around SIGHUP, STOPPING=1
at SIGTERM."""

from __future__ import annotations

import signal
import smtplib
import time

import pytest

from tests.support.daemon import MtaProcess, NotifySocket


@pytest.fixture
def manager():
    m = NotifySocket()
    yield m
    m.close()


def test_ready_watchdog_reload_and_stop(tmp_path, manager):
    mta = MtaProcess(tmp_path)
    mta.env.update({"NOTIFY_SOCKET": manager.name, "WATCHDOG_USEC": "200000"})
    try:
        mta.start()
        with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
            s.sendmail("a@sender.test", ["b@dest.test"], b"Subject: x\r\n\r\nx\r\n")

        ready = manager.next()
        assert ready["READY"] == "1"
        assert ready["STATUS"] == (f"serving SMTP 127.0.0.1:{mta.smtp_port}, HTTP "
                                   f"127.0.0.1:{mta.http_port}; 0 recipient(s) queued")

        # Pings every 0.1 s (half of 200 ms): well over five in two seconds, each alone.
        start = time.monotonic()
        pings = []
        while time.monotonic() - start < 2.0:
            fields = manager.next(5)
            assert fields == {"WATCHDOG": "1"}
            pings.append(time.monotonic())
        assert len(pings) >= 6  # ~20 expected; a loaded machine may delay some

        # The mail's first attempt is over (DNS points at a closed port): it waits in the
        # schedule, where the status line counts it.
        assert mta.wait_events(lambda e: e["event"] == "deferred", timeout=30)
        assert mta.proc is not None
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        mta.proc.send_signal(signal.SIGHUP)
        reload = manager.wait_for("RELOADING")
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reload["RELOADING"] == "1"
        assert before <= int(reload["MONOTONIC_USEC"]) <= after  # one clock for all
        again = manager.wait_for("READY")
        assert again["READY"] == "1"
        assert again["STATUS"].endswith("; 1 recipient(s) queued")  # the mail sent above
        # Pings go on after the reload.
        assert manager.wait_for("WATCHDOG", timeout=5) == {"WATCHDOG": "1"}

        mta.proc.send_signal(signal.SIGTERM)
        stopping = manager.wait_for("STOPPING")
        assert stopping["STOPPING"] == "1"
        assert mta.proc.wait(30) == 0
    finally:
        mta.kill()


def test_no_pings_for_another_pid_or_without_watchdog_usec(tmp_path, manager):
    for n, env in enumerate(({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, {})):
        workdir = tmp_path / f"mta{n}"
        workdir.mkdir()
        mta = MtaProcess(workdir)
        mta.env.update({"NOTIFY_SOCKET": manager.name, **env})
        try:
            mta.start()
            assert manager.next()["READY"] == "1"
            manager.sock.settimeout(1.0)
            with pytest.raises(TimeoutError):
                manager.sock.recv(4096)  # a second of silence: no WATCHDOG=1
            assert mta.terminate() == 0
            assert manager.next()["STOPPING"] == "1"
        finally:
            mta.kill()
