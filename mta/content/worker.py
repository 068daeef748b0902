"""Where the rules run: `RuleRunner.scan(message) -> Scan | None`, off the event loop.

Owns the rules' worker processes ([content] workers; 0 = a thread). A regex over a 25 MB
body holds the GIL for as long as it runs, so a thread would stall every session the
daemon serves; a separate process does not. Each worker runs `worker.serve()` in its own
interpreter (a fresh one: forking a process that runs uvloop and threads is unsafe) that
compiles the rules once and then answers messages in order over its stdin/stdout:

    parent -> worker: frame(pickled ContentConfig), then frame(message bytes)...
    worker -> parent: frame(pickled (hits, hosts, parts)) per message, in order
    frame = 4-byte big-endian length + payload

The pipes are the event loop's own transports (no executor threads, no locks), read by a
protocol: a message costs the parent a write and one callback. A scan that outlasts
[content] rules_timeout (a pathological pattern) gets its worker killed; that worker's
pending scans answer None (the caller applies [content] rules_fail) and a new worker
starts on the next message.
A config reload starts new workers; the old ones finish what they have, then exit at the
end of their input.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import pickle
import struct
import sys
from typing import BinaryIO, cast

from mta.config.content import ContentConfig
from mta.content.rules import Rules, Scan

__all__ = ["RuleRunner"]

log = logging.getLogger("mta.content")

_LEN = struct.Struct(">I")


class _Worker(asyncio.SubprocessProtocol):
    """One worker process and the scans it has been sent, oldest first.

    The worker's stdout is read by this protocol itself: a frame that arrives resolves
    its scan's future in the same callback (no reader task woken, no StreamReader). The
    rules_timeout is one timer per worker, not one per scan: the worker answers in order,
    so only the oldest scan's deadline can be the first to pass."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        # (future, deadline, size) per scan sent and not answered yet.
        self.pending: collections.deque[
            tuple[asyncio.Future[Scan | None], float, int]] = collections.deque()
        self.alive = True
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.pid = 0
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self._loop.create_future()

    # --- asyncio.SubprocessProtocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: typed by cast, not isinstance.
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()
        self.stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= _LEN.size:
            size = _LEN.unpack_from(buf, pos)[0]
            end = pos + _LEN.size + size
            if end > n:
                break
            body = bytes(buf[pos + _LEN.size:end])
            pos = end
            if not self.pending:
                continue  # answers to no question: only if the worker misbehaves
            fut = self.pending.popleft()[0]
            if not fut.done():
                fut.set_result(Scan(*pickle.loads(body)))
        if pos:
            del buf[:pos]

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._gone()  # killed, crashed, or its input closed

    def process_exited(self) -> None:
        self._gone()
        if not self._exited.done():
            self._exited.set_result(None)

    # ---------------------------------------------------------------------------------

    def _gone(self) -> None:
        self.alive = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self.pending:
            fut = self.pending.popleft()[0]
            if not fut.done():
                fut.set_result(None)

    def send(self, data: bytes) -> asyncio.Future[Scan | None]:
        fut: asyncio.Future[Scan | None] = self._loop.create_future()
        stdin = self.stdin
        if not self.alive or stdin is None or stdin.is_closing():
            fut.set_result(None)
            return fut
        self.pending.append((fut, self._loop.time() + self.timeout, len(data)))
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout, self._check_deadline)
        # Written by the transport as the pipe takes it; a 25 MB message is buffered once.
        if len(data) < 65536:
            stdin.write(_LEN.pack(len(data)) + data)
        else:  # not copied into one more 25 MB buffer
            stdin.write(_LEN.pack(len(data)))
            stdin.write(data)
        return fut

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.pending or not self.alive:
            return
        _, deadline, size = self.pending[0]
        now = self._loop.time()
        if now >= deadline:
            log.error("content rules took over %ss on a %d-byte message; worker %d killed",
                      self.timeout, size, self.pid)
            self.kill()
            self._gone()  # the pending scans answer None now, not when the pipe closes
            return
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def kill(self) -> None:
        self.alive = False  # nothing more is sent to it; the pending answer None
        if self.transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()

    def finish(self) -> None:
        """No more work: the worker exits once it has answered what it has."""
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()

    async def wait(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._exited)
        if self.transport is not None:
            self.transport.close()


class RuleRunner:
    def __init__(self, cfg: ContentConfig) -> None:
        self.cfg = cfg
        self.rules = Rules(cfg)  # this process's copy: names, actions; the scan if workers=0
        self._workers: list[_Worker | None] = []
        self._starting: list[asyncio.Task[_Worker] | None] = []
        self._retired: set[_Worker] = set()
        self._reset_slots()

    def _reset_slots(self) -> None:
        n = self.cfg.workers if self.rules else 0
        self._workers = [None] * n
        self._starting = [None] * n

    def reload(self, cfg: ContentConfig) -> None:
        old = [w for w in self._workers if w is not None]
        self.cfg, self.rules = cfg, Rules(cfg)
        self._reset_slots()
        for w in old:
            self._retire(w)

    def warm(self) -> None:
        """Start the workers now (an interpreter takes ~0.2 s), not at the first message."""
        for i in range(len(self._workers)):
            self._start(i)

    async def scan(self, data: bytes) -> Scan | None:
        """The rules' findings, or None if the scan timed out or its worker died."""
        if not self.rules:
            return Scan((), ())
        if not self._workers:
            call = asyncio.get_running_loop().run_in_executor(None, self.rules.scan, data)
            try:
                return await asyncio.wait_for(call, self.cfg.rules_timeout)
            except TimeoutError:
                log.error("content rules took over %ss on a %d-byte message (in a thread, "
                          "which runs on)", self.cfg.rules_timeout, len(data))
                return None
        worker = await self._least_busy()
        if worker is None:
            return None
        # The worker's own timer answers None at rules_timeout (and kills it). A caller
        # that gives up cancels only its future: the answer, when it comes, is dropped.
        return await worker.send(data)

    async def _least_busy(self) -> _Worker | None:
        best = None
        for i, w in enumerate(self._workers):
            if w is None or not w.alive:
                try:
                    w = await self._start(i)
                except Exception:  # logged by _started; this message gets rules_fail
                    continue
            if w.alive and (best is None or len(w.pending) < len(best.pending)):
                best = w
        return best

    def _start(self, i: int) -> asyncio.Task[_Worker]:
        """Slot i's worker: the one running, the one starting, or a new one."""
        task = self._starting[i]
        if task is not None and (not task.done() or (
                not task.cancelled() and task.exception() is None and task.result().alive)):
            return task
        old, self._workers[i] = self._workers[i], None
        if old is not None:
            self._retire(old)
        task = asyncio.ensure_future(self._spawn(self.cfg))
        self._starting[i] = task
        task.add_done_callback(lambda t, i=i: self._started(i, t))
        return task

    def _started(self, i: int, task: asyncio.Task[_Worker]) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("cannot start a content rules worker: %s", task.exception())
            return
        if i < len(self._starting) and self._starting[i] is task:
            self._workers[i] = task.result()
        else:  # started for a config that has since been replaced
            self._retire(task.result())

    async def _spawn(self, cfg: ContentConfig) -> _Worker:
        _, worker = await asyncio.get_running_loop().subprocess_exec(
            lambda: _Worker(cfg.rules_timeout),
            # -c, not -m: mta.content (imported first) already holds this module.
            sys.executable, "-c", "from mta.content.worker import serve; serve()",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
        assert worker.stdin is not None
        conf = pickle.dumps(cfg)
        worker.stdin.write(_LEN.pack(len(conf)) + conf)
        return worker

    def _retire(self, w: _Worker) -> None:
        self._retired.add(w)
        w.finish()
        task = asyncio.ensure_future(w.wait())
        task.add_done_callback(lambda _t: self._retired.discard(w))

    async def aclose(self) -> None:
        for t in self._starting:
            if t is not None and not t.done():
                t.cancel()
        workers = [w for w in self._workers if w is not None] + list(self._retired)
        self._reset_slots()
        for w in workers:
            w.finish()
        for w in workers:
            try:
                await asyncio.wait_for(w.wait(), 5)
            except TimeoutError:
                w.kill()
                await w.wait()


# --- the worker process ----------------------------------------------------------------

def _read_frame(stream: BinaryIO) -> bytes | None:
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    n = _LEN.unpack(head)[0]
    body = stream.read(n)
    return body if len(body) == n else None


def serve() -> None:
    """The worker process's main loop (started by RuleRunner; ends at end of input)."""
    # The protocol owns stdout: anything else printed goes to stderr instead.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    conf = _read_frame(stdin)
    if conf is None:
        return
    rules = Rules(pickle.loads(conf))
    while (data := _read_frame(stdin)) is not None:
        try:
            scan = rules.scan(data)
        except Exception as e:  # a bug must answer (as no findings), not hang the daemon
            print(f"mta content worker: scan failed: {e!r}", file=sys.stderr)
            scan = Scan((), ())
        body = pickle.dumps((scan.hits, scan.hosts, scan.parts))  # a tuple: cheap to load
        out.write(_LEN.pack(len(body)) + body)
        out.flush()


if __name__ == "__main__":
    serve()
