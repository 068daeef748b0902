"""A bare SMTP client over asyncio streams, for tests that need exact bytes on the wire
(pipelining, smuggling, over-long lines). Every read has a timeout."""

from __future__ import annotations

import asyncio

TIMEOUT = 5.0


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, host: str, port: int, *, greeting: bool = True) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
        client = cls(reader, writer)
        if greeting:
            await client.reply()
        return client

    async def reply(self, wait: float = TIMEOUT) -> str:
        """One (possibly multi-line) reply, lines joined by "\\n", CRLFs removed."""
        lines = []
        while True:
            line = await asyncio.wait_for(self.reader.readline(), wait)
            if not line:
                raise ConnectionError("connection closed; got " + repr(lines))
            text = line.decode("utf-8").rstrip("\r\n")
            lines.append(text)
            if len(text) < 4 or text[3] != "-":
                return "\n".join(lines)

    async def replies(self, n: int) -> list[str]:
        return [await self.reply() for _ in range(n)]

    def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode("utf-8") if isinstance(data, str) else data)

    async def cmd(self, line: str) -> str:
        self.send(line + "\r\n")
        return await self.reply()

    async def closed(self, wait: float = TIMEOUT) -> bool:
        """True once the server has closed the connection (EOF)."""
        data = await asyncio.wait_for(self.reader.read(), wait)
        return data == b"" or self.reader.at_eof()

    async def close(self) -> None:
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)
        except (OSError, TimeoutError):
            pass

    async def ehlo(self, name: str = "client.test") -> str:
        return await self.cmd(f"EHLO {name}")
