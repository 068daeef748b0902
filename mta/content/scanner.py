"""The optional real scanner: rspamd over its HTTP protocol (`POST /checkv2`).

Owns the request (the message as the body; the envelope in rspamd's headers: IP, Helo,
From, one Rcpt per recipient, Queue-Id, User for an authenticated sender, MTA-Name) and
the reading of the answer (`action`, `score`, `symbols`). What rspamd's action becomes
here is the filter's business ([content] scanner_actions); this module only says what
rspamd said, or raises `ScannerError` when it could not say anything (refused connection,
timeout, HTTP error, an answer that is not rspamd's JSON).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from multidict import CIMultiDict

__all__ = ["RspamdClient", "ScannerError", "ScannerVerdict"]


class ScannerError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class ScannerVerdict:
    action: str  # rspamd's: "reject", "soft reject", "add header", "no action", ...
    score: float
    symbols: tuple[str, ...]  # the rules that fired, by name

    def as_dict(self) -> dict[str, object]:
        return {"action": self.action, "score": self.score, "symbols": list(self.symbols)}


class RspamdClient:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url.rstrip("/") + "/checkv2"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def check(self, data: bytes, *, client_ip: str = "", helo: str = "",
                    mail_from: str = "", recipients: Sequence[str] = (), queue_id: str = "",
                    user: str | None = None, mta_name: str = "") -> ScannerVerdict:
        headers: CIMultiDict[str] = CIMultiDict()
        try:
            headers["IP"] = str(ipaddress.ip_address(client_ip))
        except ValueError:
            pass  # an HTTP injection has no SMTP client address worth scoring
        for name, value in (("Helo", helo), ("From", mail_from), ("Queue-Id", queue_id),
                            ("User", user or ""), ("MTA-Name", mta_name)):
            if value and value.isprintable():
                headers[name] = value
        for r in recipients:
            headers.add("Rcpt", r)
        if self._session is None or self._session.closed:
            # One session (one connection pool) for the daemon's life, made in its loop.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=64), raise_for_status=False)
        try:
            async with self._session.post(
                    self.url, data=data, headers=headers,
                    timeout=aiohttp.ClientTimeout(total=self.timeout)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise ScannerError(f"rspamd answered HTTP {resp.status}: "
                                       f"{body[:200].decode('utf-8', 'replace')}")
        except (aiohttp.ClientError, OSError) as e:
            raise ScannerError(f"rspamd unreachable: {e}") from None
        except TimeoutError:
            raise ScannerError(f"rspamd did not answer within {self.timeout}s") from None
        return _verdict(body)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _verdict(body: bytes) -> ScannerVerdict:
    try:
        doc = json.loads(body)
    except ValueError:
        raise ScannerError("rspamd's answer is not JSON") from None
    if not isinstance(doc, dict) or "error" in doc:
        raise ScannerError(f"rspamd error: {doc.get('error') if isinstance(doc, dict) else doc}")
    action = doc.get("action")
    score = doc.get("score", 0.0)
    symbols = doc.get("symbols") or {}
    if doc.get("is_skipped") and not isinstance(action, str):
        action = "no action"  # skipped by its own settings: no opinion
    if not isinstance(action, str) or not isinstance(score, int | float):
        raise ScannerError("rspamd's answer has no action and score")
    return ScannerVerdict(action, float(score),
                          tuple(sorted(symbols)) if isinstance(symbols, dict) else ())
