"""`mta serve` with `[server] workers` > 1: one supervisor, N worker processes.

Each worker is a whole daemon (mta.daemon.Daemon) on its own spool shard (`shard` = its
number); they share the SMTP listeners (SO_REUSEPORT: the kernel spreads connections), and
policy, shaping, suppression and reputation state through the cluster's Redis, exactly as
the nodes of a cluster do; without `[cluster] redis_url`, through a private redis-server
the supervisor starts first, restarts if it dies and stops last (mta.embedded_store).
Worker 0 also serves `[http] listen` and the admin socket, and answers for all: its queue
routes and /metrics reach the other workers over their own admin sockets
(`SPOOL/admin-NN.sock`, mta.http.shards).

The supervisor starts the workers, tells systemd READY=1 once every worker is ready (each
writes one byte to the pipe in $MTA_READY_FD), forwards SIGTERM, SIGINT, SIGHUP and
SIGUSR1 to all of them, pings the watchdog, and restarts a worker that dies (after 1 s,
doubling to 30 s if it keeps dying): its shard, with everything it acknowledged, is
served again. It exits once every worker has, with 0 if they all stopped cleanly.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time

from mta.children import die_with_parent
from mta.config import Config
from mta.embedded_store import STORE_URL_ENV, EmbeddedStore
from mta.observe.systemd import notify, watchdog_interval

__all__ = ["READY_FD_ENV", "SHARD_ENV", "supervise"]

log = logging.getLogger("mta")

READY_FD_ENV = "MTA_READY_FD"
SHARD_ENV = "MTA_WORKER"
_FORWARD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)


class _Worker:
    def __init__(self, cfg: Config, shard: int) -> None:
        self.cfg, self.shard = cfg, shard
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_r = -1
        self.ready = False
        self.backoff = 1.0
        self.restart_at = 0.0
        self.started_at = 0.0

    def start(self, store_url: str = "") -> None:
        r, w = os.pipe()
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env.update({READY_FD_ENV: str(w), SHARD_ENV: str(self.shard)})
        if store_url:
            env[STORE_URL_ENV] = store_url
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mta.cli", "serve", "-c", str(self.cfg.path)],
            env=env, pass_fds=(w,), stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent(os.getpid()))
        os.close(w)
        self.ready_r, self.ready, self.started_at = r, False, time.monotonic()
        log.info("worker %d started (pid %d)", self.shard, self.proc.pid)


def supervise(cfg: Config) -> int:
    store = None if cfg.cluster.redis_url else EmbeddedStore(cfg.spool.dir)
    if store is not None:
        try:
            store.start()
        except (RuntimeError, OSError) as e:
            log.error("%s", e)
            return 1
    try:
        return _supervise(cfg, store)
    finally:
        if store is not None:
            store.stop()


def _supervise(cfg: Config, store: EmbeddedStore | None) -> int:
    workers = [_Worker(cfg, i) for i in range(cfg.server.workers)]
    stopping = False
    pending: list[int] = []
    store_url = store.url if store is not None else ""

    def on_signal(signum: int, frame: object) -> None:
        pending.append(signum)

    for sig in _FORWARD:
        signal.signal(sig, on_signal)
    for w in workers:
        w.start(store_url)
    announced = False
    interval = watchdog_interval()
    next_ping = time.monotonic()
    statuses: dict[int, int] = {}
    while True:
        while pending:
            sig = pending.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT) and not stopping:
                stopping = True
                notify("STOPPING=1\nSTATUS=draining every worker")
                log.info("stopping: draining %d workers", len(workers))
            if sig == signal.SIGHUP:
                notify("RELOADING=1")
            for w in workers:
                if w.proc is not None and w.proc.poll() is None:
                    w.proc.send_signal(sig)
            if sig == signal.SIGHUP:
                notify("READY=1")
        fds = [w.ready_r for w in workers if w.ready_r >= 0 and not w.ready]
        readable, _, _ = select.select(fds, [], [], 0.2) if fds else ([], [], [])
        if not fds:
            time.sleep(0.2)
        for w in workers:
            if w.ready_r in readable:
                if os.read(w.ready_r, 1):
                    w.ready = True
                    w.backoff = 1.0
                os.close(w.ready_r)
                w.ready_r = -1
        if not announced and all(w.ready for w in workers):
            announced = True
            notify(f"READY=1\nSTATUS=serving with {len(workers)} workers")
            log.info("mta ready: %d workers", len(workers))
        now = time.monotonic()
        if interval is not None and now >= next_ping:
            notify("WATCHDOG=1")
            next_ping = now + interval
        if store is not None and not stopping:
            _keep_store(store, now)
        for w in workers:
            if w.proc is None:
                if not stopping and now >= w.restart_at:
                    w.start(store_url)
                continue
            code = w.proc.poll()
            if code is None:
                continue
            # A worker still starting when the stop came dies of the forwarded signal
            # itself (its handler not installed yet, nothing accepted): stopped as told.
            stopped = stopping and code in (-signal.SIGTERM, -signal.SIGINT)
            statuses[w.shard] = 0 if stopped else code
            w.proc = None
            if w.ready_r >= 0:
                os.close(w.ready_r)
                w.ready_r = -1
            if stopping:
                continue
            log.error("worker %d exited with %d; restarting it in %.0f s", w.shard, code,
                      w.backoff)
            w.restart_at = now + w.backoff
            w.backoff = min(w.backoff * 2, 30.0)
        if stopping and all(w.proc is None for w in workers):
            return 0 if all(c == 0 for c in statuses.values()) else 1


def _keep_store(store: EmbeddedStore, now: float) -> None:
    """The embedded store died: start it again (its file has every write). The workers'
    Redis clients reconnect on their next command; until then their operations fail as
    they would with a cluster's Redis down."""
    if store.proc is None:
        if now >= store.restart_at:
            try:
                store.start()
                store.backoff = 1.0
            except (RuntimeError, OSError) as e:
                log.error("%s; trying again in %.0f s", e, store.backoff)
                store.restart_at = now + store.backoff
                store.backoff = min(store.backoff * 2, 30.0)
        return
    code = store.died()
    if code is not None:
        log.error("the embedded store exited with %d; restarting it", code)
