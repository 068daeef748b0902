"""Child processes that answer framed requests in order over their stdin/stdout.

Owns the mechanism shared by the content rules' workers (mta.content.worker) and the
DKIM signing workers (mta.dkim.pool): `PipeWorkers` keeps N slots of `PipeWorker`s,
each a fresh interpreter (`python -c "from MODULE import FUNC; FUNC()"`, which calls
`serve_frames`: forking a process that runs uvloop and threads is unsafe) that gets one
configuration frame, then request frames, and answers each request with one frame:

    parent -> worker: frame(config), then frame(request)...
    worker -> parent: frame(answer) per request, in order
    frame = 4-byte big-endian length + payload

The pipes are the event loop's own transports (no executor threads, queues or locks),
read by the protocol itself: the requests of one loop iteration cost the parent one
write, and an answer part of one callback. A worker that dies (crash, kill -9) or
outlasts its timeout (killed) answers None to everything it had; a new worker starts
for the next request.
A retired worker (reload) finishes what it has and exits at the end of its input; a
worker whose parent dies is killed by the kernel (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import cast

from mta.children import tie_to_parent

__all__ = ["PipeWorker", "PipeWorkers", "serve_frames"]

log = logging.getLogger("mta.pipeworker")

LEN = struct.Struct(">I")
_BIG = 65536  # a request this large is written as is, not copied behind its length

# on_timeout(worker pid, size of the request that timed out, timeout): logs the kill.
TimeoutReport = Callable[[int, int, float], None]


class PipeWorker(asyncio.SubprocessProtocol):
    """One worker process and the requests it has been sent, oldest first.

    A frame that arrives resolves its request's future in the same callback (no reader
    task woken, no StreamReader). The timeout is one timer per worker, not one per
    request: the worker answers in order, so only the oldest deadline can pass first."""

    def __init__(self, timeout: float, on_timeout: TimeoutReport, gather: float = 0.0) -> None:
        self.timeout = timeout
        self.gather = gather  # see send
        self._on_timeout = on_timeout
        # (future, deadline, size) per request sent and not answered yet.
        self.pending: collections.deque[
            tuple[asyncio.Future[bytes | None], float, int]] = collections.deque()
        self.alive = True
        self.transport: asyncio.SubprocessTransport | None = None
        self.stdin: asyncio.WriteTransport | None = None
        self.pid = 0
        self.returncode: int | None = None
        self._buf = bytearray()
        self._out = bytearray()  # requests not written yet (see send)
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[None] = self._loop.create_future()
        # Called once the process has exited, unless it was told to (finish, kill).
        self.on_death: Callable[[PipeWorker], None] | None = None
        self._expected = False
        # Set by spawn(ready=True): the empty frame the worker sends once set up.
        self.ready: asyncio.Future[None] | None = None

    # --- asyncio.SubprocessProtocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio's: typed by cast, not isinstance.
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()
        self.stdin = cast(asyncio.WriteTransport, self.transport.get_pipe_transport(0))

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buf = self._buf
        if not buf and len(data) >= LEN.size:
            # The usual case: whole answers in one read, parsed without copying into buf.
            pos = self._answer(data, len(data))
            if pos < len(data):
                buf += data[pos:]
            return
        buf += data
        pos = self._answer(buf, len(buf))
        if pos:
            del buf[:pos]

    def _answer(self, buf: bytes | bytearray, n: int) -> int:
        """Resolve the futures of the complete frames in buf; the offset parsed to."""
        pos = 0
        pending = self.pending
        if self.ready is not None and not self.ready.done() and n >= LEN.size:
            pos = LEN.size + LEN.unpack_from(buf, 0)[0]  # the ready frame (empty)
            if pos > n:
                return 0
            self.ready.set_result(None)
        while n - pos >= LEN.size:
            end = pos + LEN.size + LEN.unpack_from(buf, pos)[0]
            if end > n:
                break
            body = (buf[pos + LEN.size:end] if isinstance(buf, bytes)
                    else bytes(memoryview(buf)[pos + LEN.size:end]))
            pos = end
            if not pending:
                continue  # answers to no question: only if the worker misbehaves
            fut = pending.popleft()[0]
            if not fut.done():
                fut.set_result(body)
        return pos

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        if fd == 1:
            self._gone()  # killed, crashed, or its input closed

    def process_exited(self) -> None:
        if self.transport is not None:
            self.returncode = self.transport.get_returncode()
        self._gone()
        if not self._expected and self.on_death is not None:
            self._expected = True
            self.on_death(self)
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
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ChildProcessError(f"worker {self.pid} exited at start"))
            self.ready.exception()  # retrieved: nobody need wait for it

    def send(self, data: bytes, head: bytes = b"") -> asyncio.Future[bytes | None]:
        """The answer frame to `head + data` (head: a few bytes of header, so a caller
        need not copy data behind them), or None if the worker dies or times out first.
        A caller that gives up cancels only its future: the answer, when it comes, is
        dropped."""
        fut: asyncio.Future[bytes | None] = self._loop.create_future()
        stdin = self.stdin
        if not self.alive or stdin is None or stdin.is_closing():
            fut.set_result(None)
            return fut
        size = len(head) + len(data)
        self.pending.append((fut, self._loop.time() + self.timeout, size))
        if self._timer is None:
            self._timer = self._loop.call_later(self.timeout, self._check_deadline)
        if size < _BIG:
            # Held until the end of this loop iteration: the requests of every session
            # that reached this step together go in one write, which wakes the worker
            # once (a write per request cost the parent ~24 us each under load). To an
            # idle worker, held `gather` seconds: under moderate load a wake-up of the
            # worker (and of the daemon for the answers) then serves several requests.
            # A busy worker reads what came meanwhile once it is done: no wait.
            out = self._out
            if not out:
                if self.gather and len(self.pending) == 1:
                    self._loop.call_later(self.gather, self._flush)
                else:
                    self._loop.call_soon(self._flush)
            out += LEN.pack(size)
            out += head
            out += data
        else:  # not copied into one more 25 MB buffer
            self._flush()
            stdin.write(LEN.pack(size) + head)
            stdin.write(data)
        return fut

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        stdin = self.stdin
        if self.alive and stdin is not None and not stdin.is_closing():
            stdin.write(bytes(out))  # buffered by the transport as the pipe takes it
        out.clear()  # (a worker gone meanwhile has already answered None to these)

    def _check_deadline(self) -> None:
        self._timer = None
        if not self.pending or not self.alive:
            return
        _, deadline, size = self.pending[0]
        if self._loop.time() >= deadline:
            self._on_timeout(self.pid, size, self.timeout)
            self.kill()
            self._gone()  # the pending answer None now, not when the pipe closes
            return
        self._timer = self._loop.call_at(deadline, self._check_deadline)

    def kill(self) -> None:
        self.alive = False  # nothing more is sent to it; the pending answer None
        self._expected = True
        if self.transport is not None:
            with contextlib.suppress(ProcessLookupError):
                self.transport.kill()

    def finish(self) -> None:
        """No more work: the worker exits once it has answered what it has."""
        if self.alive:
            self._expected = True  # (a worker already dead still gets its on_death)
        self._flush()
        if self.stdin is not None and not self.stdin.is_closing():
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self.stdin.close()

    async def wait(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self._exited)
        if self.transport is not None:
            self.transport.close()


async def _spawn(target: str, config: bytes, answer_within: float,
                 on_timeout: TimeoutReport, ready: bool, gather: float) -> PipeWorker:
    module, _, func = target.partition(":")
    _, worker = await asyncio.get_running_loop().subprocess_exec(
        lambda: PipeWorker(answer_within, on_timeout, gather),
        # -c, not -m: the package (imported first) already holds the module, and runpy
        # would run a second copy. The parent's pid: see serve_frames.
        sys.executable, "-c", f"from {module} import {func}; {func}()", str(os.getpid()),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None)
    assert worker.stdin is not None
    if ready:
        worker.ready = asyncio.get_running_loop().create_future()
    worker.stdin.write(LEN.pack(len(config)) + config)
    return worker


class PipeWorkers:
    """`n` slots of workers running `target` ("module:function") on `config`.

    `least_busy()` gives the live worker with the fewest requests pending, starting
    those that are not running (a slot restarts on the first request after its worker
    died). `reload()` retires every worker for new ones on a new config.
    ready: the worker says when it is set up (serve_frames(ready=True)), so `started()`
    can wait for that. gather: seconds a request to an idle worker waits for others to go
    with it (PipeWorker.send)."""

    def __init__(self, target: str, config: bytes, n: int, *, timeout: float,
                 on_timeout: TimeoutReport, ready: bool = False, gather: float = 0.0) -> None:
        self.target = target
        self.with_ready = ready
        self.gather = gather
        self.config = config
        self.timeout = timeout
        self.on_timeout = on_timeout
        self.on_death: Callable[[PipeWorker], None] | None = None
        self._workers: list[PipeWorker | None] = [None] * n
        self._starting: list[asyncio.Task[PipeWorker] | None] = [None] * n
        self._retired: set[PipeWorker] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._workers)

    def workers(self) -> list[PipeWorker]:
        return [w for w in self._workers if w is not None]

    def reload(self, config: bytes, n: int, *, timeout: float) -> None:
        old = self.workers()
        self.config, self.timeout = config, timeout
        self._reset(n)
        for w in old:
            self.retire(w)

    def _reset(self, n: int) -> None:
        # A worker still starting is retired when it is up (_started).
        self._workers = [None] * n
        self._starting = [None] * n

    def warm(self) -> None:
        """Start the workers now (an interpreter takes ~0.2 s), not at the first request."""
        for i in range(len(self._workers)):
            self._start(i)

    async def started(self, within: float) -> None:
        """Start the workers and wait until each is set up, failed (logged; its slot tries
        again at the next request), or `within` seconds have passed."""
        self.warm()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                for task in list(self._starting):
                    if task is None:
                        continue
                    with contextlib.suppress(Exception):
                        w = await asyncio.shield(task)
                        if w.ready is not None:
                            await asyncio.shield(w.ready)

    async def least_busy(self) -> PipeWorker | None:
        if self._closed:
            return None
        best = None
        for i, w in enumerate(self._workers):
            if w is None or not w.alive:
                try:
                    w = await self._start(i)
                except Exception:  # logged by _started; the caller falls back
                    continue
            if w.alive and (best is None or len(w.pending) < len(best.pending)):
                best = w
        return best

    def _start(self, i: int) -> asyncio.Task[PipeWorker]:
        """Slot i's worker: the one running, the one starting, or a new one."""
        task = self._starting[i]
        if task is not None and (not task.done() or (
                not task.cancelled() and task.exception() is None and task.result().alive)):
            return task
        old, self._workers[i] = self._workers[i], None
        if old is not None:
            self.retire(old)
        task = asyncio.ensure_future(
            _spawn(self.target, self.config, self.timeout, self.on_timeout, self.with_ready,
                   self.gather))
        self._starting[i] = task
        task.add_done_callback(lambda t, i=i: self._started(i, t))
        return task

    def _started(self, i: int, task: asyncio.Task[PipeWorker]) -> None:
        if task.cancelled() or task.exception() is not None:
            if not task.cancelled():
                log.error("cannot start a worker (%s): %s", self.target, task.exception())
            return
        w = task.result()
        w.on_death = self.on_death
        if i < len(self._starting) and self._starting[i] is task:
            self._workers[i] = w
        else:  # started for a config that has since been replaced
            self.retire(w)

    def retire(self, w: PipeWorker) -> None:
        self._retired.add(w)
        w.finish()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a finalizer after the loop: the worker exits at EOF alone
            return
        task = loop.create_task(w.wait())
        task.add_done_callback(lambda _t: self._retired.discard(w))

    def _shut(self) -> list[PipeWorker]:
        """Start no more workers; the slots emptied; the workers they held."""
        self._closed = True
        for t in self._starting:
            if t is not None and not t.done():
                t.cancel()
        workers = self.workers()
        self._reset(len(self._workers))
        return workers

    def close(self) -> None:
        """Retire every worker, and start no more (sync: for finalizers)."""
        for w in self._shut():
            self.retire(w)

    async def aclose(self) -> None:
        workers = self._shut() + list(self._retired)
        for w in workers:
            w.finish()
        for w in workers:
            try:
                await asyncio.wait_for(w.wait(), 5)
            except TimeoutError:
                w.kill()
                await w.wait()


# --- in the worker process ---------------------------------------------------------------

def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def serve_frames(setup: Callable[[bytes], Callable[[bytes], bytes]], *,
                 hold: float = 0.0, ready: bool = False) -> None:
    """The worker's main loop: `setup(config)` gives the handler, which turns each
    request into its answer; returns at end of input.

    hold: the answers to the requests of one read go out in one write (fewer wake-ups
    and reads in the parent under load), but once `hold` seconds have passed since the
    first of them was ready, what is held is written after the next answer (math.inf: no
    bound; 0: each answer is written as soon as it is ready). A request of _BIG bytes or
    more never completes in the read that brought others (reads are _BIG at most), so
    nothing waits behind one. ready: send an empty frame once set up (the parent's
    PipeWorkers(ready=True) waits for it)."""
    # A worker must not outlive the daemon: a long request would keep it running after a
    # kill -9 of its parent (end of input comes only after the answer).
    if len(sys.argv) > 1 and not tie_to_parent(int(sys.argv[1]), signal.SIGKILL):
        os._exit(1)
    # The protocol owns stdout: anything else printed goes to stderr instead.
    out = os.dup(1)
    os.dup2(2, 1)
    inp = sys.stdin.fileno()
    buf = bytearray()
    handle: Callable[[bytes], bytes] | None = None
    while True:
        chunk = os.read(inp, _BIG)  # under malloc's mmap threshold: no mmap per read
        if not chunk:
            return
        buf += chunk
        answers = bytearray()
        since = 0.0  # when the oldest answer held in `answers` was ready
        pos, n = 0, len(buf)
        while n - pos >= LEN.size:
            size = LEN.unpack_from(buf, pos)[0]
            end = pos + LEN.size + size
            if end > n:
                break
            frame = bytes(memoryview(buf)[pos + LEN.size:end])
            pos = end
            if handle is None:
                handle = setup(frame)
                if ready:
                    _write_all(out, LEN.pack(0))
                continue
            answer = handle(frame)
            if not answers:
                since = time.monotonic()
            answers += LEN.pack(len(answer))
            answers += answer
            if time.monotonic() - since >= hold:
                _write_all(out, answers)
                answers.clear()
        if pos:
            del buf[:pos]
        if answers:
            _write_all(out, answers)
