"""Crash safety: kill -9 the daemon under load from many concurrent clients, restart it,
and check the invariant of DESIGN.md: every message that got `250` is in the queue with all
its recipients, and no message whose DATA had not ended is."""

from __future__ import annotations

import asyncio
import random
import re

QUEUED = re.compile(rb"250 2\.0\.0 Ok: queued as ([0-9a-f]{18})")
RCPTS = ["r1@dest.test", "r2@dest.test", "r3@dest.test"]


class Load:
    """Concurrent SMTP clients that remember, per message, whether its final dot was sent
    and which id its 250 named. Each message's sequence number is in its sender address,
    so the queue listing shows which message is which."""

    def __init__(self, port: int, clients: int) -> None:
        self.port = port
        self.clients = clients
        self.seq = 0
        self.dot_sent: set[int] = set()  # DATA ended (the server may or may not have it)
        self.acked: dict[int, str] = {}  # seq -> queue id, from the 250
        self.stop = False

    async def _client(self) -> None:
        while not self.stop:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                return
            try:
                await reader.readline()
                while not self.stop:
                    self.seq += 1
                    seq = self.seq
                    body = (f"From: s{seq}@sender.test\r\nSubject: {seq}\r\n\r\n"
                            + "x" * random.randint(100, 3000) + "\r\n").encode()
                    writer.write(b"EHLO c\r\n")
                    while not (await reader.readline()).startswith(b"250 "):
                        pass
                    writer.write(f"MAIL FROM:<s{seq}@sender.test>\r\n".encode()
                                 + b"".join(f"RCPT TO:<{r}>\r\n".encode() for r in RCPTS)
                                 + b"DATA\r\n")
                    for _ in range(len(RCPTS) + 2):  # MAIL, each RCPT, DATA (354)
                        await reader.readline()
                    # A message whose dot never left is one the server must not keep:
                    # send the body, stop at random before the dot sometimes.
                    half = len(body) // 2 if random.random() < 0.1 else 0
                    if half:
                        writer.write(body[:half])
                        await writer.drain()
                        await asyncio.sleep(random.random() * 0.05)
                    writer.write(body[half:])
                    self.dot_sent.add(seq)  # recorded before the dot is written
                    writer.write(b".\r\n")
                    await writer.drain()
                    reply = await reader.readline()
                    m = QUEUED.match(reply)
                    if m:
                        self.acked[seq] = m.group(1).decode()
                    writer.write(b"RSET\r\n")
                    await reader.readline()
            except (OSError, asyncio.IncompleteReadError):
                return
            finally:
                writer.close()

    async def run_until(self, acks: int, timeout: float = 30.0) -> None:
        tasks = [asyncio.create_task(self._client()) for _ in range(self.clients)]
        try:
            async with asyncio.timeout(timeout):
                while len(self.acked) < acks:
                    await asyncio.sleep(0.01)
        finally:
            self.tasks = tasks

    async def finish(self) -> None:
        self.stop = True
        await asyncio.wait(self.tasks, timeout=10)


def _check(mta, load: Load) -> None:
    listing = {int(m["mail_from"][1:].split("@")[0]): m for m in mta.queue_list()}
    for seq, msg_id in load.acked.items():
        assert seq in listing, f"message {seq} ({msg_id}) got 250 but is not in the queue"
        m = listing[seq]
        assert m["id"] == msg_id
        assert [r["address"] for r in m["recipients"]] == RCPTS
    for seq in listing:
        assert seq in load.dot_sent, f"message {seq} is queued but its DATA never ended"


async def test_kill_9_under_load_loses_no_accepted_message(mta_factory):
    mta = mta_factory()
    load = Load(mta.smtp_port, clients=20)
    for round_ in range(4):
        await load.run_until(acks=len(load.acked) + 100 + round_ * 50)
        mta.kill()  # SIGKILL while 20 clients are mid-transaction
        await load.finish()
        load.stop = False
        await asyncio.to_thread(mta.start)
        await asyncio.to_thread(_check, mta, load)
    assert len(load.acked) >= 400
