"""RSA signing in worker processes, so it runs beside the event loop, not in it.

Owns `SignPool`: a ProcessPoolExecutor whose workers each build their own `DkimSigner`
from the same [dkim] config once (initializer), then take (message, time) and give back
only the DKIM-Signature header(s), which the loop prepends. A thread would do for the
OpenSSL part (it releases the GIL), but dkimpy's canonicalization and header hashing hold
the GIL: measured in bench/README, signed relay fell to ~58% of unsigned that way.

A worker that dies (kill -9, OOM) breaks a ProcessPoolExecutor for every caller; the
pool is then replaced and the signature asked again once, and if that fails too, the
message is signed in this process: a crash costs time, never a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import weakref
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from mta.config import DkimDomainConfig
from mta.dkim.keys import ED25519

__all__ = ["SignPool", "attach_pool"]

log = logging.getLogger("mta.dkim")

_WORKER_SIGNER: Any = None  # in a worker: its DkimSigner


def _init_worker(dkim_cfg: Mapping[str, DkimDomainConfig], hostname: str, file: str,
                 parent: int) -> None:
    global _WORKER_SIGNER
    _die_with(parent)
    from mta.dkim.signer import DkimSigner
    _WORKER_SIGNER = DkimSigner.from_config(dkim_cfg, hostname=hostname, file=file)


def _die_with(parent: int) -> None:
    """A worker must not outlive a daemon killed with SIGKILL: it would wait on its queue
    forever (it holds both ends of the pipe, so it never sees EOF). Linux: PDEATHSIG."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the daemon died before prctl took effect
        os._exit(1)


def _sign_in_worker(message: bytes, now: float) -> bytes:
    """The header lines to prepend (b"" if no domain signs it). Only they cross back."""
    signed = _WORKER_SIGNER.sign(message, now)
    return signed[:len(signed) - len(message)]


class SignPool:
    def __init__(self, dkim_cfg: Mapping[str, DkimDomainConfig], *, hostname: str,
                 file: str, workers: int) -> None:
        self._args = (dict(dkim_cfg), hostname, file, os.getpid())
        self.workers = workers
        self.restarts = 0
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn, not fork: the daemon has threads (aiosqlite, the loop's executor), and a
        # forked child of a threaded process may inherit a held lock.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=self._args)

    async def headers(self, message: bytes, now: float) -> bytes:
        """DKIM-Signature header(s) for `message`, computed in a worker."""
        loop = asyncio.get_running_loop()
        for _attempt in range(2):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, _sign_in_worker, message, now)
            except BrokenProcessPool:
                if executor is self._executor:  # the first caller to notice replaces it
                    log.warning("DKIM signing worker died; starting a new pool")
                    self.restarts += 1
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._new_executor()
        raise BrokenProcessPool("DKIM signing pool broke twice")

    def pids(self) -> list[int]:
        """The workers' process ids (for tests and diagnostics)."""
        procs = getattr(self._executor, "_processes", None) or {}
        return list(procs)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def attach_pool(signer: Any, dkim_cfg: Mapping[str, DkimDomainConfig], *, hostname: str,
                file: str, workers: int) -> None:
    """Sign `signer`'s RSA mail in a pool of `workers` processes (0: no pool). The pool
    goes when the signer does (a reload builds a new signer, and so a new pool)."""
    if signer is None or workers <= 0:
        return
    needs_rsa = any(s.key.algorithm != ED25519 for d in signer._domains.values()
                    for s in (*d.current, *d.next))
    if not needs_rsa:
        return  # Ed25519 is cheaper inline than the hop to a process
    pool = SignPool(dkim_cfg, hostname=hostname, file=file, workers=workers)
    signer.pool = pool
    weakref.finalize(signer, pool.close)
