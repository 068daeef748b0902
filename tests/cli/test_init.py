"""`mta init`: a config that check-config accepts and the daemon serves, directories and
keys with the right modes and owners, no silent overwrite, next steps printed."""

from __future__ import annotations

import contextlib
import os
import pwd
import smtplib
import ssl
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from mta.config import load_config
from tests.support.daemon import free_port, stop_process

MTA = Path(sys.executable).parent / "mta"  # the console script of this venv


def mta(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    return subprocess.run([str(MTA), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env=env)


def init(tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return mta("init", "--dir", str(tmp / "etc"), "--spool", str(tmp / "spool"), "--log-dir",
               str(tmp / "log"), "--hostname", "mail.example.com", *extra, cwd=tmp)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_writes_a_config_check_config_accepts(tmp_path):
    proc = init(tmp_path, "--tls")
    assert proc.returncode == 0, proc.stderr
    config = tmp_path / "etc/mta.toml"
    check = mta("check-config", "-c", str(config), cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert check.stdout == f"{config}: ok\n"

    cfg = load_config(config)
    assert cfg.server.hostname == "mail.example.com"
    assert cfg.smtp.listen == [("0.0.0.0", 25)]
    assert cfg.http.listen == [("127.0.0.1", 8025)]
    assert cfg.spool.dir == tmp_path / "spool"
    assert cfg.log.events == str(tmp_path / "log/events.jsonl")
    assert cfg.dns.nameservers == []  # /etc/resolv.conf's, said in a comment
    assert len(cfg.http.admin_token) >= 32
    assert (cfg.smtp.tls_cert, cfg.smtp.tls_key) == (tmp_path / "etc/tls/cert.pem",
                                                     tmp_path / "etc/tls/key.pem")

    assert mode(config) == 0o640
    assert mode(tmp_path / "spool") == 0o750 and mode(tmp_path / "log") == 0o750
    assert mode(tmp_path / "etc/tls/key.pem") == 0o600
    # The pair loads, for the name the server announces.
    ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
        cfg.smtp.tls_cert, cfg.smtp.tls_key)
    cert = x509.load_pem_x509_certificate(cfg.smtp.tls_cert.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "mail.example.com"

    out = proc.stdout
    assert "example.com.         MX   10 mail.example.com.\n" in out
    assert '"v=spf1 a:mail.example.com ~all"' in out
    assert '_dmarc.example.com.  TXT  "v=DMARC1; p=none;' in out
    assert (f"mta dkim keygen --domain example.com --selector s{time.strftime('%Y%m')} "
            f"--out {tmp_path}/etc/dkim\n") in out
    assert f"mta check-config -c {config}\n" in out
    assert "systemctl enable --now mta\n" in out


def test_without_tls_starttls_is_left_commented(tmp_path):
    assert init(tmp_path).returncode == 0
    config = tmp_path / "etc/mta.toml"
    assert mta("check-config", "-c", str(config), cwd=tmp_path).returncode == 0
    assert load_config(config).smtp.tls_cert is None
    assert f'# tls_cert = "{tmp_path}/etc/tls/cert.pem"' in config.read_text()
    assert not (tmp_path / "etc/tls").exists()


def test_an_existing_config_is_not_replaced_without_force(tmp_path):
    assert init(tmp_path, "--tls").returncode == 0
    config = tmp_path / "etc/mta.toml"
    before = config.read_text()
    key = (tmp_path / "etc/tls/key.pem").read_bytes()
    proc = init(tmp_path, "--tls")
    assert proc.returncode == 73
    assert proc.stderr == f"mta init: {config} exists; not overwriting it (--force replaces " \
                          "it)\n"
    assert proc.stdout == ""
    assert config.read_text() == before
    proc = init(tmp_path, "--force")
    assert proc.returncode == 0, proc.stderr
    assert config.read_text() != before  # a new admin token, and no TLS this time
    assert (tmp_path / "etc/tls/key.pem").read_bytes() == key  # kept: not asked for


def test_bad_arguments_exit_64_with_a_clear_line(tmp_path):
    for args, says in ((("--hostname", "localhost"), "is not a fully qualified host name"),
                       (("--hostname", "mail..example.com"), "is not a fully qualified"),
                       (("--listen", "0.0.0.0"), "give HOST:PORT, e.g. 0.0.0.0:25"),
                       (("--listen", "0.0.0.0:99999"), "--listen"),
                       (("--bogus",), "unrecognized arguments: --bogus")):
        proc = mta("init", "--dir", str(tmp_path / "etc"), *args, cwd=tmp_path)
        assert proc.returncode == 64, (args, proc.stderr)
        assert says in proc.stderr.splitlines()[-1], (args, proc.stderr)
    assert not (tmp_path / "etc").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="ownership is only given by root")
def test_as_root_what_the_daemon_writes_is_its_users(tmp_path):
    user = pwd.getpwnam("nobody")
    assert init(tmp_path, "--tls", "--user", "nobody").returncode == 0
    for d in ("spool", "log"):
        st = (tmp_path / d).stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid)
    st = (tmp_path / "etc/mta.toml").stat()
    assert (st.st_uid, st.st_gid) == (0, user.pw_gid)  # root:nobody's group, 0640
    st = (tmp_path / "etc/tls/key.pem").stat()
    assert st.st_uid == user.pw_uid and mode(tmp_path / "etc/tls/key.pem") == 0o600


def test_the_daemon_serves_the_written_config(tmp_path):
    smtp_port, http_port = free_port(), free_port()
    proc = init(tmp_path, "--tls", "--listen", f"127.0.0.1:{smtp_port}", "--http-listen",
                f"127.0.0.1:{http_port}")
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in os.environ.items() if k != "MTA_CONFIG"}
    with open(tmp_path / "stderr", "wb") as err:
        daemon = subprocess.Popen([str(MTA), "serve", "-c", str(tmp_path / "etc/mta.toml")],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                  env=env)
    try:
        deadline = time.monotonic() + 20
        features = None
        while features is None and time.monotonic() < deadline and daemon.poll() is None:
            with contextlib.suppress(OSError, smtplib.SMTPException), smtplib.SMTP(
                    "127.0.0.1", smtp_port, timeout=5) as s:
                s.ehlo("client.test")
                features = s.esmtp_features
            time.sleep(0.1)
        assert features is not None, (tmp_path / "stderr").read_text()
        assert "starttls" in features
        # `workers = "auto"`: SMTP answers once one worker listens, [http] is worker 0's
        # and may come up a moment later.
        status = None
        while status is None and time.monotonic() < deadline + 20:
            with contextlib.suppress(OSError), urllib.request.urlopen(
                    f"http://127.0.0.1:{http_port}/metrics", timeout=10) as r:
                status = r.status
            time.sleep(0.1)
        assert status == 200, (tmp_path / "stderr").read_text()
        assert (tmp_path / "spool").is_dir() and any((tmp_path / "spool").iterdir())
    finally:
        stop_process(daemon, timeout=15)
    assert daemon.returncode == 0, (tmp_path / "stderr").read_text()
