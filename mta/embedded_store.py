"""The workers' shared store when no `[cluster] redis_url` is given: a private redis-server
(Debian's package) that `mta serve` starts beside its workers and stops after them.

Workers share credits, quotas, unique recipients, suspensions, throttles and leases
exactly as the nodes of a cluster do, through Redis (mta.supervisor); a machine with one
node should not need a Redis to be set up for that. This one listens on a Unix socket in
the spool (`SPOOL/store/redis.sock`, mode 0700: no TCP port, nothing else can reach it),
keeps its data in `SPOOL/store/` as an append-only file synced at every write
(`appendfsync always`: a credit charged is on disk before the 250, like policy.db's), and
is restarted by the supervisor if it dies. Its URL reaches the workers in $MTA_STORE_URL;
`with_store(cfg)` is how a worker (and its SIGHUP reload) applies it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mta.children import die_with_parent

if TYPE_CHECKING:  # the config loader imports this module (redis_server)
    from mta.config import Config

__all__ = ["STORE_URL_ENV", "EmbeddedStore", "redis_server", "with_store"]

log = logging.getLogger("mta")

STORE_URL_ENV = "MTA_STORE_URL"
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, with room for the terminator


def redis_server() -> str | None:
    """The redis-server binary, if installed (Debian puts it in /usr/bin)."""
    return shutil.which("redis-server") or next(
        (p for p in ("/usr/bin/redis-server", "/usr/sbin/redis-server")
         if os.access(p, os.X_OK)), None)


def with_store(cfg: Config) -> Config:
    """`cfg` as a worker runs it: the embedded store's URL when the supervisor started one."""
    url = os.environ.get(STORE_URL_ENV)
    if not url or cfg.cluster.redis_url:
        return cfg
    return dataclasses.replace(cfg, cluster=dataclasses.replace(cfg.cluster, redis_url=url))


class EmbeddedStore:
    def __init__(self, spool_dir: Path) -> None:
        self.dir = Path(spool_dir) / "store"
        self.socket = self.dir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self.backoff = 1.0
        self.restart_at = 0.0

    @property
    def url(self) -> str:
        return f"unix://{self.socket}?db=0"

    def start(self, timeout: float = 15.0) -> None:
        """Start redis-server and wait until it answers; RuntimeError if it does not."""
        binary = redis_server()
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian package redis-server): "
                               "more than one worker without [cluster] redis_url needs it")
        if len(str(self.socket)) > _SOCKET_MAX:
            raise RuntimeError(f"{self.socket}: the spool path is too long for a Unix "
                               "socket; set [cluster] redis_url instead")
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        self.socket.unlink(missing_ok=True)
        args = [binary, "--port", "0", "--unixsocket", str(self.socket),
                "--unixsocketperm", "700", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--daemonize", "no", "--protected-mode", "yes",
                "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     preexec_fn=die_with_parent(os.getpid()))
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the embedded store did not start (see "
                                   f"{self.dir / 'redis.log'})")
            time.sleep(0.05)
        log.info("embedded store: redis-server (pid %d) on %s", self.proc.pid, self.socket)

    def ping(self) -> bool:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(1)
                s.connect(str(self.socket))
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def died(self) -> int | None:
        """Its exit status if it has died (and was not stopped), else None."""
        if self.proc is None:
            return None
        code = self.proc.poll()
        if code is not None:
            self.proc = None
        return code

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (redis-server syncs its file and exits), SIGKILL if it does not."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
