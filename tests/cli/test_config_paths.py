"""Which config file a command uses without -c: $MTA_CONFIG, else ./config.toml when it
exists (a checkout), else /etc/mta/mta.toml; with none, one line naming what was tried."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.daemon import MtaProcess, stop_process

MTA = Path(sys.executable).parent / "mta"  # the console script of this venv
SYSTEM_CONFIG = Path("/etc/mta/mta.toml")


def mta(*args: str, cwd: Path, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    return subprocess.run([str(MTA), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**base, **(env or {})})


def write_config(path: Path, hostname: str = "mta.test") -> None:
    path.write_text(f'[server]\nhostname = "{hostname}"\n[spool]\ndir = "spool"\n'
                    '[log]\nevents = "events.jsonl"\n')


def test_serve_without_c_uses_config_toml_of_the_current_directory(tmp_path):
    # The daemon's test config (free loopback ports), renamed to what a checkout has.
    m = MtaProcess(tmp_path)
    m.config_path.rename(tmp_path / "config.toml")
    env = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    with open(tmp_path / "stderr", "wb") as err:
        proc = subprocess.Popen([str(MTA), "serve"], cwd=tmp_path, stderr=err, env=env,
                                stdout=subprocess.DEVNULL)
    try:
        banner = b""
        deadline = time.monotonic() + 20
        while not banner and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", m.smtp_port), timeout=1) as s:
                s.settimeout(5)
                banner = s.recv(512)
                s.sendall(b"QUIT\r\n")
            time.sleep(0.05)
        assert banner.startswith(b"220 mta.test"), (tmp_path / "stderr").read_text()
        assert (tmp_path / "spool").is_dir()  # [spool] dir = "spool", beside config.toml
    finally:
        stop_process(proc, timeout=15)
    assert proc.returncode == 0, (tmp_path / "stderr").read_text()


def test_mta_config_beats_config_toml_and_c_beats_both(tmp_path):
    write_config(tmp_path / "config.toml")
    write_config(tmp_path / "other.toml")
    write_config(tmp_path / "third.toml")
    assert mta("check-config", cwd=tmp_path).stdout == "config.toml: ok\n"
    env = {"MTA_CONFIG": str(tmp_path / "other.toml")}
    assert mta("check-config", cwd=tmp_path, env=env).stdout == f"{tmp_path}/other.toml: ok\n"
    proc = mta("-c", "third.toml", "check-config", cwd=tmp_path, env=env)
    assert proc.stdout == "third.toml: ok\n"
    proc = mta("check-config", "-c", "third.toml", cwd=tmp_path, env=env)
    assert proc.stdout == "third.toml: ok\n"


def test_a_named_file_that_is_missing_is_reported_by_its_name(tmp_path):
    write_config(tmp_path / "config.toml")  # not used instead: the operator named a file
    missing = tmp_path / "absent.toml"
    for args, env in ((("check-config",), {"MTA_CONFIG": str(missing)}),
                      (("-c", str(missing), "check-config"), {})):
        proc = mta(*args, cwd=tmp_path, env=env)
        assert proc.returncode == 78
        assert proc.stderr == f"{missing}: (file): cannot read: No such file or directory\n"


@pytest.mark.skipif(SYSTEM_CONFIG.exists(), reason="this machine has /etc/mta/mta.toml")
def test_no_config_anywhere_is_one_line_and_78(tmp_path):
    line = ("mta: no config file: tried -c, $MTA_CONFIG, ./config.toml, /etc/mta/mta.toml "
            "(`mta init` writes one)\n")
    for args in (("check-config",), ("serve",), ("queue", "list"), ("policy", "tenants"),
                 ("dkim", "check", "--domain", "example.com"), ("licence", "show")):
        proc = mta(*args, cwd=tmp_path)
        assert (proc.returncode, proc.stderr) == (78, line), args
    # Commands that need no config still work: built-in bounce rules.
    proc = mta("bounce", "classify", "452 4.2.2 mailbox full", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[:2] == ["mailbox_full", "retry"]
