"""RSA signing in worker processes, so it runs beside the event loop, not in it.

Owns `SignPool`: [signing] workers processes (mta.pipeworker: fresh interpreters driven
over the loop's own pipes), each building its own `DkimSigner` from the [dkim] config
once, then answering, in order, one frame per message:

    parent -> worker: frame(pickled (dkim config, hostname, file)), then
                      frame(8-byte big-endian double `now` + message)...
    worker -> parent: frame(b"\\0" + the DKIM-Signature header(s) to prepend)
                      or frame(b"\\1" + why dkimpy could not parse it: DkimSignError)
                      or frame(b"\\2" + a bug's repr: the caller signs in-process)

The whole message goes over and only the header comes back: measured (bench/README,
issue 19), the daemon's share of a signature is then ~25 us (a pipe write and part of
one read callback; the ProcessPoolExecutor this replaces cost ~85 us on the loop and
~170 more in its feeder and manager threads), where sending only the digest would add
the ~60 us of parsing, canonicalization and hashing to the loop. A worker answers every
message it has read in one write: at saturation that halves the loop's share (one
callback for several answers). Workers run at the daemon's priority: the unit's
SystemCallFilter (~@resources) refuses setpriority, so `os.nice` would kill them.

A worker that dies (kill -9, OOM) answers None for every message it had; each is then
asked once more of a live worker (a new one starts in its slot), and if that fails too,
signed in this process: a crash costs time, never a message, and never a signature.
"""

from __future__ import annotations

import asyncio
import logging
import math
import pickle
import struct
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from mta.config import DkimDomainConfig
from mta.dkim.keys import ED25519
from mta.dkim.signer import DkimSigner, DkimSignError
from mta.pipeworker import PipeWorker, PipeWorkers, serve_frames

__all__ = ["SignPool", "attach_pool", "start_pool"]

log = logging.getLogger("mta.dkim")

_TARGET = "mta.dkim.pool:serve"
_NOW = struct.Struct(">d")
# A 25 MiB message signs in well under a second, and a worker holds at most what the
# daemon has in DATA at once: only a hung worker takes this long. It is killed and its
# messages go elsewhere.
_ANSWER_WITHIN = 30.0
_OK, _UNPARSABLE, _BUG = 0, 1, 2


def _timed_out(pid: int, size: int, timeout: float) -> None:
    log.error("DKIM signing worker %d did not answer within %ss (a %d-byte message); "
              "killed", pid, timeout, size)


class SignPool:
    def __init__(self, dkim_cfg: Mapping[str, DkimDomainConfig], *, hostname: str,
                 file: str, workers: int) -> None:
        self.workers = workers
        self.restarts = 0  # workers that died (not retired, not killed at the timeout)
        self._pool = PipeWorkers(_TARGET, pickle.dumps((dict(dkim_cfg), hostname, file)),
                                 workers, timeout=_ANSWER_WITHIN, on_timeout=_timed_out,
                                 ready=True)
        self._pool.on_death = self._died

    def warm(self) -> None:
        self._pool.warm()

    async def started(self) -> None:
        """Wait until the workers have their keys, failed to start, or a hung one has had
        _ANSWER_WITHIN (its requests then wait on it, as on any hung worker)."""
        await self._pool.started(_ANSWER_WITHIN)

    def _died(self, w: PipeWorker) -> None:
        self.restarts += 1
        log.warning("DKIM signing worker %d died (exit status %s); its messages are signed "
                    "again and a new worker starts", w.pid, w.returncode)

    async def headers(self, message: bytes, now: float) -> bytes | None:
        """DKIM-Signature header(s) for `message`, computed in a worker; None if no
        worker could (the caller signs it itself). Raises DkimSignError."""
        for _attempt in range(2):
            worker = await self._pool.least_busy()
            if worker is None:
                return None
            answer = await worker.send(message, head=_NOW.pack(now))
            if answer is None:
                continue  # its worker died or hung: once more, elsewhere
            status = answer[0]
            if status == _OK:
                return answer[1:]
            if status == _UNPARSABLE:
                raise DkimSignError(answer[1:].decode("utf-8", "replace"))
            log.error("DKIM signing worker failed: %s", answer[1:].decode("utf-8", "replace"))
            return None
        return None

    def pids(self) -> list[int]:
        """The live workers' process ids (for tests and diagnostics)."""
        return [w.pid for w in self._pool.workers() if w.alive]

    def close(self) -> None:
        self._pool.close()

    async def aclose(self) -> None:
        await self._pool.aclose()


def attach_pool(signer: Any, dkim_cfg: Mapping[str, DkimDomainConfig], *, hostname: str,
                file: str, workers: int) -> None:
    """Sign `signer`'s RSA mail in a pool of `workers` processes (0: no pool), started
    now if a loop runs. The pool goes when the signer does (a reload builds a new
    signer, and so a new pool; the old workers finish what they have)."""
    if signer is None or workers <= 0:
        return
    needs_rsa = any(s.key.algorithm != ED25519 for d in signer._domains.values()
                    for s in (*d.current, *d.next))
    if not needs_rsa:
        return  # Ed25519 is cheaper inline than the hop to a process
    pool = SignPool(dkim_cfg, hostname=hostname, file=file, workers=workers)
    signer.pool = pool
    weakref.finalize(signer, pool.close)
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop yet: the first message starts them
        return
    pool.warm()


async def start_pool(signer: Any, dkim_cfg: Mapping[str, DkimDomainConfig], *,
                     hostname: str, file: str, workers: int) -> None:
    """attach_pool, then wait until its workers are up: the first message does not wait
    ~0.3 s for an interpreter, and their start-up is over before the daemon is ready."""
    attach_pool(signer, dkim_cfg, hostname=hostname, file=file, workers=workers)
    if signer is not None and signer.pool is not None:
        await signer.pool.started()


# --- in the worker process ---------------------------------------------------------------

def _setup(conf: bytes) -> Callable[[bytes], bytes]:
    dkim_cfg, hostname, file = pickle.loads(conf)
    signer = DkimSigner.from_config(dkim_cfg, hostname=hostname, file=file)

    def handle(frame: bytes) -> bytes:
        now = _NOW.unpack_from(frame)[0]
        message = frame[_NOW.size:]
        try:
            d = signer.match(message)
            return b"\0" if d is None else b"\0" + signer.signature_headers(d, message, now)
        except DkimSignError as e:
            return b"\1" + str(e).encode("utf-8", "replace")
        except Exception as e:  # a bug: the daemon signs this one itself
            return b"\2" + repr(e).encode("utf-8", "replace")

    return handle


def serve() -> None:
    """A signing worker's main loop (started by SignPool; ends at end of input)."""
    serve_frames(_setup, hold=math.inf, ready=True)
