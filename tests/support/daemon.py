"""Run the real daemon (`mta serve`) as a child process, the way operators run it.

`MtaProcess(tmp_path, extra_toml)` writes a config with free loopback ports, starts
`python -m mta.cli serve`, waits until SMTP answers (with `start(notified=True)`, also until
it tells systemd READY=1: every worker listens), and can stop it with SIGTERM or kill it
with SIGKILL. Used by every test that needs the whole product rather than one module.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class NotifySocket:
    """The receiving end of a $NOTIFY_SOCKET, as systemd holds it, in the abstract namespace
    (no path limits): what the daemon tells the manager (READY=1, WATCHDOG=1, ...)."""

    def __init__(self) -> None:
        self.name = f"@mta-test-notify-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name[1:])
        self.seen: list[tuple[float, dict[str, str]]] = []

    def next(self, timeout: float = 20.0) -> dict[str, str]:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        fields = dict(line.split("=", 1) for line in data.splitlines() if line)
        self.seen.append((time.monotonic(), fields))
        return fields

    def wait_for(self, key: str, timeout: float = 20.0) -> dict[str, str]:
        """The next message carrying `key`, skipping watchdog pings."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.next(max(0.1, deadline - time.monotonic()))
            if key in fields:
                return fields

    def ready(self, deadline: float, proc: subprocess.Popen[bytes]) -> bool:
        """Whether READY=1 comes before `deadline`, while `proc` runs."""
        while deadline > time.monotonic() and proc.poll() is None:
            try:
                if self.next(min(deadline - time.monotonic(), 0.5)).get("READY") == "1":
                    return True
            except TimeoutError:
                continue
        return False

    def close(self) -> None:
        self.sock.close()


class MtaProcess:
    def __init__(self, workdir: Path, extra_toml: str = "", *, smtp_port: int | None = None,
                 http_port: int | None = None, dns: str | None = None,
                 delivery_port: int = 2599, smtp_extra: str = "",
                 delivery_extra: str = "") -> None:
        self.workdir = workdir
        self.smtp_port = smtp_port or free_port()
        self.http_port = http_port or free_port()
        self.config_path = workdir / "mta.toml"
        # By default DNS points at a closed loopback port: nothing is ever looked up
        # outside this machine, and mail waits in the queue (deferred) unless a test
        # gives a real test DNS server.
        nameserver = dns or f"127.0.0.1:{free_port()}"
        self.config_path.write_text(f"""
[server]
hostname = "mta.test"
shutdown_timeout = "10s"

[smtp]
listen = ["127.0.0.1:{self.smtp_port}"]
{smtp_extra}

[http]
listen = ["127.0.0.1:{self.http_port}"]
admin_token = "{ADMIN_TOKEN}"

[spool]
dir = "spool"

[dns]
nameservers = ["{nameserver}"]
timeout = "2s"

[delivery]
port = {delivery_port}
{delivery_extra}

[log]
events = "events.jsonl"
level = "info"
""" + extra_toml)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = workdir / "mta.stderr"
        self.env: dict[str, str] = {}  # extra environment (e.g. NOTIFY_SOCKET)

    # --- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 20.0, *, notified: bool = False) -> MtaProcess:
        """Until SMTP answers; with `notified`, also until the daemon tells systemd
        READY=1 (through a $NOTIFY_SOCKET of our own): with `[server] workers` > 1 the
        first worker answers SMTP before the others listen, and connections opened then
        all land on it."""
        manager = NotifySocket() if notified and "NOTIFY_SOCKET" not in self.env else None
        self._stderr = open(self.stderr_path, "ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if manager is not None:
            env["NOTIFY_SOCKET"] = manager.name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mta.cli", "serve", "-c", str(self.config_path)],
            cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=self._stderr, env=env)
        deadline = time.monotonic() + timeout
        try:
            self._wait_banner(deadline)
            if manager is not None and not manager.ready(deadline, self.proc):
                raise RuntimeError(f"mta did not tell READY=1 within {timeout}s:\n"
                                   f"{self.stderr}")
        except BaseException:
            self.kill()
            raise
        finally:
            if manager is not None:
                manager.close()
        return self

    def _wait_banner(self, deadline: float) -> None:
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mta exited with {self.proc.returncode}:\n{self.stderr}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.smtp_port), timeout=1) as s:
                s.settimeout(5)
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    # Until the server has closed this probe, so that a test reading the
                    # connection gauges right away sees none open.
                    while s.recv(512):
                        pass
                    return
            time.sleep(0.05)
        raise RuntimeError(f"mta did not answer SMTP in time:\n{self.stderr}")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the exit status."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._close()

    def kill(self) -> None:
        """SIGKILL, as a power cut looks to the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if getattr(self, "_stderr", None) is not None:
            self._stderr.close()
            self._stderr = None

    @property
    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    # --- what a user looks at -----------------------------------------------------------
    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "mta.cli", "-c", str(self.config_path),
                               *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.workdir)

    def queue_list(self) -> list[dict]:
        proc = self.cli("queue", "list", "--json", "--limit", "10000")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)["messages"]

    def events(self) -> list[dict]:
        path = self.workdir / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line]

    def wait_events(self, predicate, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.1)


@pytest.fixture
def mta_factory(tmp_path):
    """Start daemons in per-test directories; all are killed after the test."""
    started: list[MtaProcess] = []

    def factory(extra_toml: str = "", **kw) -> MtaProcess:
        workdir = tmp_path / f"mta{len(started)}"
        workdir.mkdir()
        m = MtaProcess(workdir, extra_toml, **kw)
        started.append(m)
        return m.start()

    yield factory
    for m in started:
        m.kill()
