"""Child process for the crash test: put messages concurrently, print each id on stdout as
soon as put() returns it, until killed.

    python crash_child.py SPOOL_DIR CONCURRENCY

Message number n has (n % 5) + 1 recipients, and its body says how many, so the parent can
tell a whole message from a torn one.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

from mta.queue.envelope import Envelope, Recipient
from mta.queue.spool import Spool


def message(n: int) -> tuple[Envelope, bytes]:
    k = n % 5 + 1
    env = Envelope("crash", "sender@example.org",
                   [Recipient(f"r{i}@site{i % 3}.example") for i in range(k)])
    body = f"X-Rcpts: {k}\r\n\r\n".encode() + b"b" * (500 + n % 1500)
    return env, body


async def main(directory: Path, concurrency: int) -> None:
    spool = await Spool.open(directory, max_batch=64)
    counter = itertools.count()
    out = sys.stdout

    async def putter() -> None:
        while True:  # runs until SIGKILL; the parent bounds the run
            env, body = message(next(counter))
            msg_id = await spool.put(env, body)
            out.write(msg_id + "\n")
            out.flush()

    out.write("ready\n")
    out.flush()
    await asyncio.gather(*(putter() for _ in range(concurrency)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
