"""A private Postfix instance for side-by-side benchmarks: its own config, queue and data
directories under a temp dir, smtpd on one loopback port, relaying by `transport_maps` to
the bench sinks (no DNS: Postfix would read the machine's /etc/resolv.conf).

    pf = Postfix(workdir, port=2600, transport={"*": "[127.0.0.2]:2601"})
    pf.start()            # `postfix -c DIR start`; returns once smtpd greets
    ...
    pf.stop()             # `postfix -c DIR stop`; always call it (try/finally)

`ensure_installed()` installs the Debian package when missing (as root, without letting
the package configure or start a system instance) and stops a system Postfix if one runs,
so only the private instance is measured. Nothing here binds anything but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

POSTFIX = "/usr/sbin/postfix"
START_TIMEOUT = 30.0


def ensure_installed() -> None:
    """apt-get install postfix if missing ("No configuration": no system instance), then
    stop any system Postfix so it neither competes for CPU nor holds port 25."""
    if not Path(POSTFIX).exists():
        if os.geteuid() != 0:
            raise RuntimeError("postfix is not installed and we are not root: "
                               "apt-get install postfix")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["debconf-set-selections"], env=env, check=True, timeout=60,
                       input=b"postfix postfix/main_mailer_type select No configuration\n")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "postfix"], env=env, check=True, timeout=600)
    stop_system_postfix()


def stop_system_postfix() -> None:
    """Stop the default instance if it runs (apt may have started it)."""
    if shutil.which("systemctl") and Path("/run/systemd/system").exists():
        subprocess.run(["systemctl", "stop", "postfix"], capture_output=True, timeout=60)
    if Path("/etc/postfix/main.cf").exists():
        status = subprocess.run([POSTFIX, "status"], capture_output=True, timeout=30)
        if status.returncode == 0:
            subprocess.run([POSTFIX, "stop"], capture_output=True, timeout=60)


class Postfix:
    """One private instance. `transport` maps a recipient domain (or "*") to a next hop
    such as "[127.0.0.2]:2601" (brackets: no MX lookup)."""

    def __init__(self, workdir: Path, *, port: int, transport: dict[str, str],
                 retry: float = 300.0, concurrency: int = 20) -> None:
        self.workdir = Path(workdir)
        self.port = port
        self.transport = transport
        self.retry = retry
        self.concurrency = concurrency
        self.config_dir = self.workdir / "etc"
        self.queue_dir = self.workdir / "queue"
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "maillog"
        self.running = False

    # --- configuration --------------------------------------------------------------

    def write_config(self) -> None:
        for parent in self.workdir.resolve().parents:
            if not parent.stat().st_mode & 0o001:  # postfix's daemons run as user postfix
                raise RuntimeError(f"{parent} is not searchable by others: the postfix "
                                   f"user cannot reach {self.workdir}; use another --tmp")
        for d in (self.config_dir, self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")
        lines = "".join(f"{dom} smtp:{hop}\n" for dom, hop in self.transport.items()
                        if dom != "*")
        (self.config_dir / "transport").write_text(lines)
        default = self.transport.get("*")
        retry = max(1, round(self.retry))
        main = f"""
compatibility_level = 3.6
config_directory = {self.config_dir}
queue_directory = {self.queue_dir}
data_directory = {self.data_dir}
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
mydestination =
relay_domains =
local_recipient_maps =
alias_maps =
alias_database =
# Loopback only: this instance must never listen on a public address.
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# No DNS at all: every next hop is an address literal from transport_maps.
transport_maps = texthash:{self.config_dir}/transport
{f"relayhost = {default}" if default else ""}
disable_dns_lookups = yes
smtp_host_lookup = native
smtp_tls_security_level = none
smtpd_tls_security_level = none
# The same connection budget as mta's [delivery] connection_limit.
default_destination_concurrency_limit = {self.concurrency}
smtp_destination_concurrency_limit = {self.concurrency}
default_process_limit = 100
# Retries as soon as mta's [delivery] retry in the same scenario.
queue_run_delay = {retry}s
minimal_backoff_time = {retry}s
maximal_backoff_time = {max(retry, 2)}s
# The bench sinks accept 10,000s of messages; no size/recipient surprises.
message_size_limit = 0
smtpd_recipient_limit = 10000
maillog_file = {self.log_path}
maillog_file_prefixes = {self.workdir}
biff = no
append_dot_mydomain = no
"""
        (self.config_dir / "main.cf").write_text(main)
        (self.config_dir / "master.cf").write_text(self._master_cf())

    def _master_cf(self) -> str:
        """The Debian master.cf with chroot off (nothing to copy into a jail) and the
        port-25 listener replaced by ours on 127.0.0.1."""
        src = Path("/etc/postfix/master.cf")
        if not src.exists():
            src = Path("/usr/share/postfix/master.cf.dist")
        out = []
        for line in src.read_text().splitlines():
            fields = line.split()
            if not line or line[0] in "# \t" or len(fields) < 8:
                out.append(line)
                continue
            if fields[1] == "inet":
                if fields[0] == "smtp":  # the one listener we run
                    fields[0] = f"127.0.0.1:{self.port}"
                else:  # submission etc. are commented out upstream; keep them off
                    out.append("#" + line)
                    continue
            fields[4] = "n"
            out.append(" ".join(fields[:8]) + ("" if len(fields) == 8 else
                                               " " + " ".join(fields[8:])))
        return "\n".join(out) + "\n"

    # --- lifecycle ------------------------------------------------------------------

    def _postfix(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args],
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> Postfix:
        if not (self.config_dir / "main.cf").exists():
            self.write_config()
        r = self._postfix("start")
        if r.returncode != 0:
            raise RuntimeError(f"postfix start failed: {r.stdout}{r.stderr}{self.log_tail()}")
        self.running = True
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> float:
        """Seconds until smtpd answers 220 on our port."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=2) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return time.monotonic() - t0
            time.sleep(0.02)
        raise RuntimeError(f"postfix not ready after {timeout}s:{self.log_tail()}")

    def stop(self) -> None:
        if not self.running:
            return
        self.running = False
        r = self._postfix("stop")
        pid = self.master_pid()
        deadline = time.monotonic() + 20
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid and _alive(pid):  # the master did not go: make sure it does
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        if r.returncode != 0 and "not running" not in r.stderr:
            raise RuntimeError(f"postfix stop failed: {r.stderr}")

    def abort(self) -> None:
        """`postfix abort`: stop now (used on the error path)."""
        if self.running:
            self.running = False
            self._postfix("abort")

    def flush(self) -> None:
        """Retry the deferred queue now (`postqueue -f`)."""
        subprocess.run(["/usr/sbin/postqueue", "-c", str(self.config_dir), "-f"],
                       capture_output=True, timeout=60, check=True)

    # --- what we measure --------------------------------------------------------------

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def queue_bytes(self) -> int:
        return _du(self.queue_dir)

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n" + self.log_path.read_text(errors="replace")[-2000:]
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _du(path: Path) -> int:
    """Bytes on disk under `path` (allocated blocks, like du)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, f)).st_blocks * 512
    return total
