"""PipeWorker against a real worker process: requests sent in one loop iteration go in one
write, yet every caller gets its own answer, in order, also when the worker is told to
finish at once or a large request comes behind small ones; the worker's answers to one
read are held together or written at once as its `hold` says."""

import asyncio

from mta.pipeworker import PipeWorkers

TARGET = "tests.support.echo_worker:main"


def _no_timeout(pid: int, size: int, timeout: float) -> None:
    raise AssertionError(f"worker {pid} timed out on a {size}-byte request")


async def _worker(pool: PipeWorkers):
    w = await pool.least_busy()
    assert w is not None and w.alive
    return w


async def test_requests_of_one_iteration_each_get_their_own_answer() -> None:
    pool = PipeWorkers(TARGET, b"cfg:", 1, timeout=10, on_timeout=_no_timeout)
    try:
        w = await _worker(pool)
        futs = [w.send(f"request {i}".encode(), head=b"#") for i in range(500)]
        answers = await asyncio.gather(*futs)
        assert answers == [f"cfg:#request {i}".encode() for i in range(500)]
    finally:
        await pool.aclose()


async def test_a_large_request_behind_small_ones_keeps_its_place() -> None:
    pool = PipeWorkers(TARGET, b"", 1, timeout=10, on_timeout=_no_timeout)
    try:
        w = await _worker(pool)
        big = b"x" * 300_000  # written as is, not held with the small ones
        futs = [w.send(b"first"), w.send(b"second"), w.send(big), w.send(b"last")]
        assert await asyncio.gather(*futs) == [b"first", b"second", big, b"last"]
    finally:
        await pool.aclose()


async def test_finish_right_after_sending_still_answers_what_was_sent() -> None:
    pool = PipeWorkers(TARGET, b"", 1, timeout=10, on_timeout=_no_timeout)
    w = await _worker(pool)
    futs = [w.send(b"one"), w.send(b"two")]
    w.finish()  # in the same iteration: the held requests go out before end of input
    assert await asyncio.gather(*futs) == [b"one", b"two"]
    await asyncio.wait_for(w.wait(), 10)
    assert w.returncode == 0
    assert await w.send(b"late") is None  # a finished worker takes nothing more
    await pool.aclose()


async def test_a_request_to_an_idle_worker_waits_gather_for_others_to_join_it() -> None:
    pool = PipeWorkers("tests.support.echo_worker:stamped", b"", 1, timeout=10,
                       on_timeout=_no_timeout, gather=0.3)
    try:
        w = await _worker(pool)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        first = w.send(b"first")
        await asyncio.sleep(0.05)  # a later loop iteration: it joins the held request
        second = w.send(b"second")
        handled = [float(a) for a in await asyncio.gather(first, second)]
        assert all(t >= sent + 0.3 for t in handled)  # neither went out before gather
    finally:
        await pool.aclose()


async def _arrivals(target: str) -> list[float]:
    """Three requests in one write to a worker taking 0.1 s each: when each answer came,
    counted from the send."""
    pool = PipeWorkers(target, b"", 1, timeout=10, on_timeout=_no_timeout)
    try:
        w = await _worker(pool)
        loop = asyncio.get_running_loop()
        sent = loop.time()
        came: list[float] = []
        futs = [w.send(f"r{i}".encode()) for i in range(3)]
        for f in futs:
            f.add_done_callback(lambda _: came.append(loop.time() - sent))
        assert await asyncio.gather(*futs) == [b"r0", b"r1", b"r2"]
        return came
    finally:
        await pool.aclose()


async def test_held_answers_to_one_read_come_back_together() -> None:
    # serve_frames(hold=math.inf): nothing comes before the third answer is ready.
    came = await _arrivals("tests.support.echo_worker:slow_held")
    assert min(came) >= 0.29, came
    # hold=0: the first answer is written as soon as it is ready, 0.2 s before the last.
    came = await _arrivals("tests.support.echo_worker:slow_unheld")
    assert min(came) < max(came) - 0.1, came
