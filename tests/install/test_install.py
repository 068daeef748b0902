"""`make install` into a scratch root, then the installed mta used the way an operator uses it.

One `make install DESTDIR=<root>` per module (a venv with the built wheel and its
dependencies, the `mta` link, the systemd unit, sysusers.d and tmpfiles.d files). From there,
with no checkout on the path: `mta --help` and `mta bounce classify` (the wheel carries its
data files), the installed daemon accepting mail over SMTP with STARTTLS and DKIM under the
kernel's MemoryDenyWriteExecute and stopping on SIGTERM with exit 0, the same daemon under
strace making no system call outside the unit's SystemCallFilter, and systemd-analyze
verifying the unit and rating its sandbox. systemd-analyze, systemd-sysusers,
systemd-tmpfiles and strace are required: a machine without them fails these tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.support.daemon import REPO, free_port
from tests.support.tls import write_self_signed

pytestmark = pytest.mark.slow

PR_SET_MDWE = 65  # linux/prctl.h, Linux 6.3
PR_MDWE_REFUSE_EXEC_GAIN = 1


class Installed:
    """A scratch root that `make install DESTDIR=` filled."""

    def __init__(self, root: Path, dist: Path, seconds: float) -> None:
        self.root = root
        self.dist = dist
        self.seconds = seconds
        self.mta = root / "opt/mta/bin/mta"
        self.unit = root / "usr/local/lib/systemd/system/mta.service"

    def run(self, *args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.root / "usr/local/bin/mta"), *args], cwd=cwd,
                              env=clean_env(), capture_output=True, text=True,
                              timeout=timeout)


def clean_env() -> dict[str, str]:
    """The environment without anything that points Python at the checkout or its venv."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "NOTIFY_SOCKET")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(REPO)))
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("install")
    root, build = base / "root", base / "build"
    started = time.monotonic()
    proc = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={root}", f"PYTHON={sys.executable}",
         f"BUILDDIR={build}", f"DISTDIR={build / 'dist'}", "MTA_HOSTNAME=mail.example.com"],
        capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    inst = Installed(root, build / "dist", time.monotonic() - started)
    print(f"make install took {inst.seconds:.1f}s")
    return inst


def tool(name: str) -> str:
    """The path of a required program: missing means this machine cannot check the install."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/bin/{name}") if os.access(p, os.X_OK)), None)
    assert path, f"{name} is not installed (Debian: apt-get install systemd strace)"
    return path


# --- the installed tree ---------------------------------------------------------------------

def test_install_lays_out_a_venv_a_link_and_the_systemd_files(installed, tmp_path):
    root = installed.root
    link = root / "usr/local/bin/mta"
    assert link.is_symlink() and not os.readlink(link).startswith("/")
    assert link.resolve() == installed.mta.resolve()
    assert (root / "opt/mta/pyvenv.cfg").is_file()
    assert (root / "usr/local/lib/sysusers.d/mta.conf").is_file()
    assert (root / "usr/local/lib/tmpfiles.d/mta.conf").is_file()
    assert "ExecStart=/opt/mta/bin/mta serve -c /etc/mta/mta.toml" in installed.unit.read_text()
    # The package comes from the venv, not from the checkout.
    where = subprocess.run([str(root / "opt/mta/bin/python"), "-c",
                            "import mta, sys; print(mta.__file__)"], cwd=tmp_path,
                           env=clean_env(), capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(root / "opt/mta/lib")


def test_mta_runs_through_the_link_outside_the_checkout(installed, tmp_path):
    out = installed.run("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: mta ")


def test_the_wheel_carries_every_package_data_file(installed, tmp_path):
    [wheel] = installed.dist.glob("mta-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {p.relative_to(REPO).as_posix() for p in (REPO / "mta").rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts}
    assert "mta/bounce/rules.toml" in data
    assert data <= names, data - names
    # And the installed mta reads them: the bounce rules come from the wheel.
    out = installed.run("bounce", "classify", "550 5.1.1 no such user", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[:2] == ["invalid_recipient", "bounce"]


def test_install_writes_a_first_config_for_the_final_paths(installed, tmp_path):
    """`mta init` ran: the config is right for the installed system, not the scratch root."""
    config = installed.root / "etc/mta/mta.toml"
    assert oct(config.stat().st_mode & 0o777) == "0o640"  # it holds the admin token
    text = config.read_text()
    assert str(installed.root) not in text
    assert 'dir = "/var/spool/mta"' in text
    assert 'events = "/var/log/mta/events.jsonl"' in text
    assert 'hostname = "mail.example.com"' in text
    assert (installed.root / "var/spool/mta").is_dir()
    assert (installed.root / "var/log/mta").is_dir()
    out = installed.run("check-config", "-c", str(config), cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_install_twice_is_fine_and_keeps_the_config(installed, tmp_path):
    root = installed.root
    build = installed.dist.parent
    config = (root / "etc/mta/mta.toml").read_text()  # its admin token is random
    proc = subprocess.run(
        ["make", "-C", str(REPO), "install", f"DESTDIR={root}", f"PYTHON={sys.executable}",
         f"BUILDDIR={build}", f"DISTDIR={installed.dist}", "MTA_HOSTNAME=mail.example.com"],
        capture_output=True, text=True, timeout=600, env=clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / "etc/mta/mta.toml").read_text() == config
    out = installed.run("--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_sysusers_and_tmpfiles_make_the_user_and_the_spool(installed, tmp_path):
    """The two files as systemd applies them at boot, here to a copy of the scratch root."""
    root = tmp_path / "root"
    for d in ("etc", "usr/local/lib"):
        (root / d).mkdir(parents=True)
    shutil.copytree(installed.root / "usr/local/lib/sysusers.d", root / "usr/local/lib/sysusers.d")
    shutil.copytree(installed.root / "usr/local/lib/tmpfiles.d", root / "usr/local/lib/tmpfiles.d")
    subprocess.run([tool("systemd-sysusers"), f"--root={root}"], check=True,
                   capture_output=True)
    [entry] = [line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
               if line.startswith("mta:")]
    assert entry[5:] == ["/var/spool/mta", "/usr/sbin/nologin"]
    assert int(entry[2]) < 1000  # a system user
    subprocess.run([tool("systemd-tmpfiles"), f"--root={root}", "--create"], check=True,
                   capture_output=True)
    st = (root / "var/spool/mta").stat()
    assert (st.st_uid, oct(st.st_mode & 0o777)) == (int(entry[2]), "0o750")


# --- the unit -------------------------------------------------------------------------------

def unit_for_this_machine(installed: Installed, tmp_path: Path) -> Path:
    """The installed unit with its ExecStart pointing into the scratch root.

    `systemd-analyze verify --root=` wants a whole OS tree (sysinit.target, /bin/kill) in
    the root, so verify runs against the host with only the /opt/mta prefix moved.
    """
    text = installed.unit.read_text().replace("/opt/mta/", f"{installed.root}/opt/mta/")
    path = tmp_path / "mta.service"
    path.write_text(text)
    return path


def test_systemd_analyze_verify_is_clean(installed, tmp_path):
    unit = unit_for_this_machine(installed, tmp_path)
    proc = subprocess.run([tool("systemd-analyze"), "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, "")


def test_systemd_analyze_security_rates_the_sandbox_ok(installed, tmp_path):
    unit = unit_for_this_machine(installed, tmp_path)
    analyze = tool("systemd-analyze")
    proc = subprocess.run([analyze, "security", "--offline=true", str(unit)],
                          capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for mta\.service: (\d+\.\d) (\w+)", proc.stdout)
    assert m, proc.stdout + proc.stderr
    # systemd's scale: 0 PERFECT, < 1 SAFE, < 5 OK, < 7.5 MEDIUM, then EXPOSED and UNSAFE.
    assert float(m[1]) < 5.0 and m[2] in ("PERFECT", "SAFE", "OK"), m[0]
    # --threshold is on systemd's internal 0-100 scale: 49 means "under 5.0".
    proc = subprocess.run([analyze, "security", "--offline=true", "--threshold=49", str(unit)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:]


# --- the installed daemon -------------------------------------------------------------------

def write_config(installed: Installed, smtp_port: int, http_port: int) -> Path:
    """A config in the scratch root's /etc/mta naming its spool and log directories."""
    root = installed.root
    etc = root / "etc/mta"
    (etc / "tls").mkdir(parents=True, exist_ok=True)
    write_self_signed(etc / "tls/cert.pem", etc / "tls/key.pem")
    keys = etc / "dkim"
    keys.mkdir(exist_ok=True)
    for alg in ("rsa", "ed25519"):
        if (keys / f"example.com.{alg}.key").exists():  # the other daemon test made it
            continue
        out = installed.run("dkim", "keygen", "--domain", "example.com", "--selector", alg,
                            "--algorithm", alg, "--out", str(keys), cwd=root)
        assert out.returncode == 0, out.stderr
    config = etc / "test.toml"
    config.write_text(f"""
[server]
hostname = "mta.test"
shutdown_timeout = "10s"

[smtp]
listen = ["127.0.0.1:{smtp_port}"]
relay_networks = ["127.0.0.0/8"]
tls_cert = "{etc}/tls/cert.pem"
tls_key = "{etc}/tls/key.pem"

[http]
listen = ["127.0.0.1:{http_port}"]
admin_token = "install-test"

[spool]
dir = "{root}/var/spool/mta"

[dns]
nameservers = ["127.0.0.1:{free_port()}"]
timeout = "2s"

[log]
events = "{root}/var/log/mta/events.jsonl"

[dkim."example.com"]
algorithms = ["rsa-sha256", "ed25519-sha256"]
selector = "rsa"
key = "{keys}/example.com.rsa.key"
ed25519_selector = "ed25519"
ed25519_key = "{keys}/example.com.ed25519.key"
""")
    return config


def wait_for_smtp(proc: subprocess.Popen, port: int, stderr: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mta exited {proc.returncode}:\n{stderr.read_text()}"
        with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", port), timeout=1) as s:
            s.settimeout(10)
            if s.recv(512).startswith(b"220"):
                s.sendall(b"QUIT\r\n")
                return
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"mta did not answer within {timeout}s:\n{stderr.read_text()}")


def send_one(port: int) -> tuple[int, str]:
    """EHLO, STARTTLS, one message: the reply to the end of DATA."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        s.starttls(context=ctx)
        s.ehlo("client.test")
        assert s.mail("alice@example.com")[0] == 250
        assert s.rcpt("bob@example.net")[0] == 250
        code, text = s.data(b"From: alice@example.com\r\nTo: bob@example.net\r\n"
                            b"Subject: installed\r\n\r\nHello from the installed mta.\r\n")
        return code, text.decode()


def under_systemd(tmp_path: Path) -> dict[str, str]:
    """What systemd hands a Type=notify service with WatchdogSec= (1 s here, so that a
    daemon that pings does it within the test)."""
    return {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}


def refuse_exec_gain() -> None:
    """In the child before exec: the kernel's MemoryDenyWriteExecute, kept across execve."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def test_installed_daemon_accepts_mail_under_mdwe_and_stops_on_sigterm(installed, tmp_path):
    assert "MemoryDenyWriteExecute=yes" in installed.unit.read_text()
    smtp_port, http_port = free_port(), free_port()
    config = write_config(installed, smtp_port, http_port)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(30)
    stderr = tmp_path / "mta.stderr"
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [str(installed.mta), "serve", "-c", str(config)], cwd=tmp_path, stderr=err,
            stdout=subprocess.DEVNULL, preexec_fn=refuse_exec_gain,
            env={**clean_env(), **under_systemd(tmp_path)})
    try:
        wait_for_smtp(proc, smtp_port, stderr)
        states = b""
        while b"READY=1" not in states:  # what Type=notify waits for
            states += notify.recv(4096) + b"\n"
        code, text = send_one(smtp_port)
        assert code == 250, text
        queue_id = re.fullmatch(r"2\.0\.0 Ok: queued as (\S+)", text)
        assert queue_id, text
        events = installed.root / "var/log/mta/events.jsonl"
        deadline = time.monotonic() + 10
        while not (events.exists() and queue_id[1] in events.read_text()):
            assert time.monotonic() < deadline, "no event for the accepted message"
            time.sleep(0.1)
        received = [e for e in map(json.loads, events.read_text().splitlines())
                    if e.get("id") == queue_id[1] and e["event"] == "received"]
        assert received
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()


def allowed_syscalls(unit: str) -> set[str]:
    """What the unit's SystemCallFilter= lines allow (groups expanded, ~ lines removed)."""
    out = subprocess.run([tool("systemd-analyze"), "syscall-filter"], capture_output=True,
                         text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.strip() and not line.strip().startswith("#"):
            current.append(line.strip())

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(n) for n in groups[name]))

    allow: set[str] = set()
    deny: set[str] = set()
    for value in re.findall(r"^SystemCallFilter=(.*)$", unit, re.M):
        into = deny if value.startswith("~") else allow
        for name in value.lstrip("~").split():
            into |= expand(name)
    assert allow, "the unit has no SystemCallFilter= allow list"
    return allow - deny


@pytest.mark.parametrize("workers", [1, 2])
def test_installed_daemon_makes_no_call_the_unit_filters(installed, tmp_path, workers):
    """Every system call of start-up, a TLS session with DKIM signing, and the drain.

    Two rules of the unit: SystemCallFilter= (the calls allowed) and systemd's own
    MemoryDenyWriteExecute=, which is stricter than the kernel's (it refuses any mprotect
    with PROT_EXEC, any mmap both writable and executable, and shmat with SHM_EXEC).
    With 2 workers (what "auto" gives a 2-core machine) the supervisor, both workers and
    the embedded store's redis-server are traced too: the unit must hold all of them.
    """
    smtp_port, http_port = free_port(), free_port()
    config = write_config(installed, smtp_port, http_port)
    if workers > 1:
        config.write_text(config.read_text().replace(
            "[server]\n", f"[server]\nworkers = {workers}\n", 1))
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))  # the notify and watchdog paths are traced too
    trace = tmp_path / "strace.txt"
    stderr = tmp_path / "mta.stderr"
    # The unit runs it as mta, not root: SQLite chowns its WAL to the database's owner only
    # when euid is 0 (fchown is @privileged). Root here becomes uid 1000 of a user namespace:
    # the same files, the euid of a service user.
    as_user = ([tool("unshare"), "--user", "--map-user=1000", "--map-group=1000", "--"]
               if os.geteuid() == 0 else [])
    with open(stderr, "wb") as err:
        proc = subprocess.Popen(
            [*as_user, tool("strace"), "-f", "-qq", "-s", "16", "-o", str(trace),
             "--", str(installed.mta), "serve", "-c", str(config)],
            cwd=tmp_path, stderr=err, stdout=subprocess.DEVNULL,
            env={**clean_env(), **under_systemd(tmp_path)})
    try:
        wait_for_smtp(proc, smtp_port, stderr, timeout=120)
        code, text = send_one(smtp_port)
        assert code == 250, text
        # SIGTERM to the daemon itself (strace's child), as systemd sends it.
        [child] = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        os.kill(int(child), signal.SIGTERM)
        assert proc.wait(60) == 0, stderr.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        notify.close()
    calls = [m.groups() for m in re.finditer(r"^\d+ +(\w+)\((.*)$", trace.read_text(), re.M)]
    used = {name for name, _ in calls}
    assert {"execve", "accept4", "fsync"} <= used  # the trace was read
    if workers > 1:
        assert any(n == "execve" and "redis-server" in a for n, a in calls)
    unit = installed.unit.read_text()
    assert used - allowed_syscalls(unit) == set()
    assert "MemoryDenyWriteExecute=yes" in unit
    exec_gain = [(name, args) for name, args in calls
                 if (name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in args)
                 or (name == "mmap" and "PROT_WRITE" in args and "PROT_EXEC" in args)
                 or (name == "shmat" and "SHM_EXEC" in args)]
    assert exec_gain == []


# --- last: it takes the install away ----------------------------------------------------------

def test_uninstall_removes_what_install_put_and_keeps_config_and_spool(installed, tmp_path):
    root = installed.root
    (root / "etc/mta/mta.toml").write_text("# the operator's\n")
    (root / "var/spool/mta").mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["make", "-C", str(REPO), "uninstall", f"DESTDIR={root}"],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for gone in ("opt/mta", "usr/local/bin/mta", "usr/local/lib/systemd/system/mta.service",
                 "usr/local/lib/sysusers.d/mta.conf", "usr/local/lib/tmpfiles.d/mta.conf"):
        assert not (root / gone).exists() and not (root / gone).is_symlink(), gone
    assert (root / "etc/mta/mta.toml").read_text() == "# the operator's\n"
    assert (root / "var/spool/mta").is_dir()
