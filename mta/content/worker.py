"""Where the rules run: `RuleRunner.scan(message) -> Scan | None`, off the event loop.

Owns the rules' worker processes ([content] workers; 0 = a thread). A regex over a 25 MB
body holds the GIL for as long as it runs, so a thread would stall every session the
daemon serves; a separate process does not. Each worker (mta.pipeworker: a fresh
interpreter, driven over the loop's own pipe transports) compiles the rules once and then
answers messages in order:

    parent -> worker: frame(pickled ContentConfig), then frame(message bytes)...
    worker -> parent: frame(pickled (hits, hosts, parts)) per message, in order

A scan that outlasts [content] rules_timeout (a pathological pattern) gets its worker
killed; that worker's pending scans answer None (the caller applies [content] rules_fail)
and a new worker starts on the next message.
A config reload starts new workers; the old ones finish what they have, then exit at the
end of their input.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import sys
from collections.abc import Callable

from mta.config.content import ContentConfig
from mta.content.rules import Rules, Scan
from mta.pipeworker import PipeWorkers, serve_frames

__all__ = ["RuleRunner"]

ANSWER_HOLD = 0.002  # seconds; far under any rules_timeout
# Seconds a message waits for others before it is sent to an idle worker: a wake-up of the
# worker and of the daemon then serves several (bench/content.py: the rules' cost went from
# ~9% of throughput to none; the DATA reply waits at most this much longer).
REQUEST_GATHER = 0.002

log = logging.getLogger("mta.content")


def _timed_out(pid: int, size: int, timeout: float) -> None:
    log.error("content rules took over %ss on a %d-byte message; worker %d killed",
              timeout, size, pid)


_TARGET = "mta.content.worker:serve"


class RuleRunner:
    def __init__(self, cfg: ContentConfig) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg)  # this process's copy: names, actions; the scan if workers=0
        self._workers = PipeWorkers(_TARGET, pickle.dumps(cfg), self._slots(),
                                    timeout=cfg.rules_timeout, on_timeout=_timed_out,
                                    gather=REQUEST_GATHER)

    def _slots(self) -> int:
        return self.cfg.workers if self.rules else 0

    def reload(self, cfg: ContentConfig) -> None:
        self.cfg, self.rules = cfg, Rules(cfg)
        self._workers.reload(pickle.dumps(cfg), self._slots(), timeout=cfg.rules_timeout)

    def warm(self) -> None:
        """Start the workers now (an interpreter takes ~0.2 s), not at the first message."""
        self._workers.warm()

    async def scan(self, data: bytes) -> Scan | None:
        """The rules' findings, or None if the scan timed out or its worker died."""
        if not self.rules:
            return Scan((), ())
        if not len(self._workers):
            call = asyncio.get_running_loop().run_in_executor(None, self.rules.scan, data)
            try:
                return await asyncio.wait_for(call, self.cfg.rules_timeout)
            except TimeoutError:
                log.error("content rules took over %ss on a %d-byte message (in a thread, "
                          "which runs on)", self.cfg.rules_timeout, len(data))
                return None
        worker = await self._workers.least_busy()
        if worker is None:  # none would start: this message gets rules_fail
            return None
        # The worker's own timer answers None at rules_timeout (and kills it). A caller
        # that gives up cancels only its future: the answer, when it comes, is dropped.
        answer = await worker.send(data)
        return None if answer is None else Scan(*pickle.loads(answer))

    async def aclose(self) -> None:
        await self._workers.aclose()


# --- the worker process ----------------------------------------------------------------

def _setup(conf: bytes) -> Callable[[bytes], bytes]:
    rules = Rules(pickle.loads(conf))

    def handle(data: bytes) -> bytes:
        try:
            scan = rules.scan(data)
        except Exception as e:  # a bug must answer (as no findings), not hang the daemon
            print(f"mta content worker: scan failed: {e!r}", file=sys.stderr)
            scan = Scan((), ())
        return pickle.dumps((scan.hits, scan.hosts, scan.parts))  # a tuple: cheap to load

    return handle


def serve() -> None:
    """The worker process's main loop (started by RuleRunner; ends at end of input).
    The answers to the scans read together go out together (one wake-up of the daemon
    instead of one per message under load), but once ANSWER_HOLD has passed the next
    answer sends what is held: rules_timeout runs from the oldest pending scan, and an
    unbounded batch would hold finished answers behind a slow one. (A scan that times
    out still costs the answers held with it: at most ANSWER_HOLD's worth of mail gets
    rules_fail with it.)"""
    serve_frames(_setup, hold=ANSWER_HOLD)


if __name__ == "__main__":
    serve()
