"""Where the rules run: `RuleRunner.scan(message) -> Scan | None`, off the event loop.

Owns the worker processes of the content rules ([content] workers; 0 = a thread). A
regex over a 25 MB body holds the GIL for as long as it runs, so a thread would stall
every session the daemon serves; a process does not. Workers are started with "spawn"
(forking a process that runs uvloop and threads is unsafe), each compiles the rules once,
and messages go to them whole (pickled by the executor's feeder thread, not the loop).

A scan that outlasts [content] rules_timeout (a pathological pattern) has its workers
killed and the pool replaced; the caller gets None and applies [content] rules_fail. A
config reload replaces the pool, so workers never run stale rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from mta.config.content import ContentConfig
from mta.content.rules import Rules, Scan

__all__ = ["RuleRunner"]

log = logging.getLogger("mta.content")

_RULES: Rules | None = None  # in a worker process: the rules it was started with


def _init_worker(cfg: ContentConfig) -> None:
    global _RULES
    _RULES = Rules(cfg)


def _scan_in_worker(data: bytes) -> Scan:
    assert _RULES is not None
    return _RULES.scan(data)


def _ready() -> bool:
    return _RULES is not None


class RuleRunner:
    def __init__(self, cfg: ContentConfig) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg)  # this process's copy: names, actions; the scan if workers=0
        self._pool: ProcessPoolExecutor | None = None

    def reload(self, cfg: ContentConfig) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg)
        self._drop_pool(kill=False)

    def warm(self) -> None:
        """Start the workers now (spawn takes a few hundred ms), not at the first message."""
        pool = self._executor()
        if pool is not None:
            fut = pool.submit(_ready)
            fut.add_done_callback(lambda f: f.exception())  # consumed: no "never retrieved"

    async def scan(self, data: bytes) -> Scan | None:
        """The rules' findings, or None if the scan timed out or its worker died."""
        if not self.rules:
            return Scan((), ())
        loop = asyncio.get_running_loop()
        pool = self._executor()
        if pool is None:
            call = loop.run_in_executor(None, self.rules.scan, data)
        else:
            call = loop.run_in_executor(pool, _scan_in_worker, data)
        try:
            return await asyncio.wait_for(call, self.cfg.rules_timeout)
        except TimeoutError:
            log.error("content rules took over %ss on a %d-byte message; %s",
                      self.cfg.rules_timeout, len(data),
                      "worker killed" if pool is not None else "the thread runs on")
            if pool is not None and pool is self._pool:
                self._drop_pool(kill=True)
            return None
        except BrokenProcessPool:
            log.error("a content rules worker died; starting a new one")
            if pool is self._pool:
                self._drop_pool(kill=True)
            return None

    def _executor(self) -> Executor | None:
        if self.cfg.workers == 0 or not self.rules:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.cfg.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.cfg,))
        return self._pool

    def _drop_pool(self, *, kill: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            # The executor has no public way to stop a running call (3.14 adds
            # terminate_workers); its processes are ours to end.
            for proc in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(Exception):
                    proc.kill()
        # Not cancel_futures: a cancelled call would raise CancelledError in a session
        # that was not cancelled. Queued scans finish on the old pool (or, killed, fail
        # with BrokenProcessPool: None to their callers).
        pool.shutdown(wait=False)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)
