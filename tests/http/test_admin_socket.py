"""The local admin socket ([http] admin_socket): `mta queue ...` works against a daemon
whose config has no admin token, as Postfix's postqueue works through file permissions,
while the TCP admin API keeps asking for the token. Real daemon, real `mta` console script."""

from __future__ import annotations

import json
import os
import smtplib
import socket
import stat
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.daemon import ADMIN_TOKEN, MtaProcess

MTA = str(Path(sys.executable).with_name("mta"))  # the console script operators run
MSG = b"From: a@sender.test\r\nTo: b@dest.test\r\nSubject: hi\r\n\r\nHello\r\n"


def _no_token(mta: MtaProcess) -> MtaProcess:
    """The minimal config: no [http] admin_token (so the TCP admin API is off)."""
    text = mta.config_path.read_text().replace(f'admin_token = "{ADMIN_TOKEN}"\n', "")
    assert "admin_token" not in text
    mta.config_path.write_text(text)
    return mta


def mta_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MTA, "-c", str(config), *args], capture_output=True, text=True,
                          timeout=30, cwd=config.parent)


@pytest.fixture
def daemon(tmp_path):
    started: list[MtaProcess] = []

    def make(name: str = "mta", token: bool = False) -> MtaProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        m = MtaProcess(workdir)
        started.append(m)
        return m if token else _no_token(m)

    yield make
    for m in started:
        m.kill()


def _send(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
        s.sendmail("a@sender.test", ["b@dest.test"], MSG)


def test_queue_list_works_over_the_socket_without_a_token(daemon):
    mta = daemon().start()
    _send(mta.smtp_port)
    proc = mta_cli(mta.config_path, "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    [msg] = json.loads(proc.stdout)["messages"]
    assert [r["address"] for r in msg["recipients"]] == ["b@dest.test"]
    # Acting on the queue too, not only reading it.
    proc = mta_cli(mta.config_path, "queue", "hold", msg["id"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"{msg['id']}: held", proc.stderr


def test_tcp_admin_api_still_needs_the_token(daemon):
    mta = daemon().start()
    url = f"http://127.0.0.1:{mta.http_port}/api/v1/admin/queue"
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10)
        assert exc.value.code == 401
    # The CLI without the socket (turned off in its config) has only TCP: 77, and says
    # what to fix.
    text = mta.config_path.read_text().replace("[http]\n", '[http]\nadmin_socket = ""\n')
    (mta.workdir / "tcp-only.toml").write_text(text)
    proc = mta_cli(mta.workdir / "tcp-only.toml", "queue", "list")
    assert proc.returncode == 77
    assert proc.stderr == ("mta queue list: a valid bearer token is required (unauthorized); "
                           "[http] admin_token is empty and no admin socket is configured\n")
    # Pointed at a socket that is not there: it says which.
    text = text.replace('admin_socket = ""', 'admin_socket = "absent.sock"')
    (mta.workdir / "tcp-only.toml").write_text(text)
    proc = mta_cli(mta.workdir / "tcp-only.toml", "queue", "list")
    assert proc.returncode == 77
    assert proc.stderr.endswith(f"the admin socket is not usable ({mta.workdir}/absent.sock: "
                                "No such file or directory)\n")


def test_with_a_token_the_cli_still_works_over_tcp(daemon):
    mta = daemon(token=True).start()
    text = mta.config_path.read_text().replace("[http]\n", '[http]\nadmin_socket = ""\n')
    (mta.workdir / "tcp-only.toml").write_text(text)
    proc = mta_cli(mta.workdir / "tcp-only.toml", "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["messages"] == []
    # A socket nobody answers on (a stale file): the CLI falls back to TCP and the token.
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(mta.workdir / "stale.sock"))
    text = text.replace('admin_socket = ""', 'admin_socket = "stale.sock"')
    (mta.workdir / "stale.toml").write_text(text)
    proc = mta_cli(mta.workdir / "stale.toml", "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["messages"] == []


def test_socket_is_0660_whatever_the_umask(daemon):
    mta = daemon()
    old = os.umask(0)  # the daemon inherits it: a bare bind would leave the socket 0777
    try:
        mta.start()
    finally:
        os.umask(old)
    st = os.lstat(mta.workdir / "spool" / "admin.sock")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_uid == os.getuid()
    # SIGTERM removes it.
    assert mta.terminate() == 0
    assert not (mta.workdir / "spool" / "admin.sock").exists()
    proc = mta_cli(mta.config_path, "queue", "list")
    assert proc.returncode == 69 and "cannot reach the daemon" in proc.stderr


def test_stale_socket_after_kill_9_does_not_stop_the_next_start(daemon):
    mta = daemon().start()
    mta.kill()
    assert stat.S_ISSOCK(os.lstat(mta.workdir / "spool" / "admin.sock").st_mode)
    proc = mta_cli(mta.config_path, "queue", "list")
    assert proc.returncode == 69, proc.stderr  # nobody answers on the stale socket
    mta.start()
    proc = mta_cli(mta.config_path, "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["messages"] == []


def test_a_second_daemon_does_not_steal_a_live_socket(daemon, tmp_path):
    shared = tmp_path / "admin.sock"
    first, second = daemon("one"), daemon("two")
    for m in (first, second):
        m.config_path.write_text(m.config_path.read_text().replace(
            "[http]\n", f'[http]\nadmin_socket = "{shared}"\n'))
    first.start()
    with pytest.raises(RuntimeError, match="exited with 71"):
        second.start()
    assert f"admin socket {shared} is in use by a running daemon" in second.stderr
    proc = mta_cli(first.config_path, "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr


def test_a_long_socket_path_works(daemon, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    mta = daemon()
    mta.config_path.write_text(mta.config_path.read_text().replace(
        "[http]\n", f'[http]\nadmin_socket = "{deep}/admin.sock"\n'))
    mta.start()
    assert len(str(deep / "admin.sock")) > 108  # more than sockaddr_un can hold
    proc = mta_cli(mta.config_path, "queue", "list", "--json")
    assert proc.returncode == 0, proc.stderr


def test_admin_socket_key_defaults_beside_the_spool(tmp_path):
    from mta.config import parse_config

    def sock(text: str) -> str | None:
        return parse_config(text, str(tmp_path / "mta.toml"), tmp_path).http.admin_socket

    assert sock("") == f"{tmp_path}/var/spool/admin.sock"
    assert sock('[spool]\ndir = "/srv/spool"\n') == "/srv/spool/admin.sock"
    assert sock('[http]\nadmin_socket = "run/a.sock"\n') == f"{tmp_path}/run/a.sock"
    assert sock('[http]\nadmin_socket = "/run/mta/admin.sock"\n') == "/run/mta/admin.sock"
    assert sock('[http]\nadmin_socket = ""\n') == ""  # off
