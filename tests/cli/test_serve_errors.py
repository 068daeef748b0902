"""What `mta serve` says when it cannot start, as the README's Troubleshooting quotes it:
one line and a sysexits code, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support.daemon import free_port

MTA = Path(sys.executable).parent / "mta"  # the console script of this venv


def serve(tmp: Path, smtp_port: int, extra: str = "") -> subprocess.CompletedProcess[str]:
    config = tmp / "mta.toml"
    config.write_text(f'[server]\nhostname = "mta.test"\n[smtp]\n'
                      f'listen = ["127.0.0.1:{smtp_port}"]\n{extra}\n'
                      f'[http]\nlisten = ["127.0.0.1:{free_port()}"]\n'
                      '[spool]\ndir = "spool"\n[log]\nevents = "events.jsonl"\n')
    env = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    return subprocess.run([str(MTA), "serve", "-c", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=tmp, env=env)


def test_a_port_in_use_is_one_line_and_71(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = serve(tmp_path, port)
    assert proc.returncode == 71
    assert "Traceback" not in proc.stderr
    last = proc.stderr.splitlines()[-1]
    assert last.endswith(f"ERROR mta: cannot start: [Errno 98] error while attempting to bind "
                         f"on address ('127.0.0.1', {port}): address already in use"), last


def test_a_missing_tls_pair_is_named_and_78(tmp_path):
    proc = serve(tmp_path, free_port(), 'tls_cert = "tls/cert.pem"\ntls_key = "tls/key.pem"')
    assert proc.returncode == 78
    assert proc.stderr.splitlines() == [
        f"{tmp_path}/mta.toml: smtp.tls_cert: file not found: {tmp_path}/tls/cert.pem",
        f"{tmp_path}/mta.toml: smtp.tls_key: file not found: {tmp_path}/tls/key.pem"]


def test_a_second_daemon_on_a_running_daemons_port_is_refused(tmp_path, mta_factory):
    # Not SO_REUSEPORT: a second `mta serve` must not quietly share the first one's port.
    first = mta_factory()
    (tmp_path / "second").mkdir()
    proc = serve(tmp_path / "second", first.smtp_port)
    assert proc.returncode == 71
    assert proc.stderr.splitlines()[-1].endswith(": address already in use")
