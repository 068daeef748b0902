"""DKIM signing speed: signatures per second on one core, stock dkimpy vs mta.dkim.

    .venv/bin/python bench/dkim_sign.py [--seconds 1.0]

Rows: RSA-2048 and Ed25519, 2 KB and 100 KB messages, relaxed/relaxed, the default header
list. "stock" is `dkim.sign()` with the PEM / base64 key (as dkimpy is normally called);
"mta" is `DkimSigner.sign()` (keys parsed once, RSA through OpenSSL). Then the event-loop
question: N messages signed inline vs through `sign_async` (a worker thread), with the
worst delay seen by a 1 ms ticker on the loop. Target: RSA-2048 >= 2,000/s at 2 KB.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# This file is named dkim.py: take its own directory off the path so `import dkim` finds
# dkimpy, and put the repository root there so `mta` imports without installing.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import dkim  # noqa: E402

from mta.config import DkimDomainConfig  # noqa: E402
from mta.dkim import DkimSigner, sign_async  # noqa: E402
from mta.dkim.keys import ED25519, RSA, generate_key  # noqa: E402

HEAD = (b"From: Shop <news@example.com>\r\nTo: someone@example.org\r\n"
        b"Subject: Your weekly offers\r\nDate: Sun, 22 Nov 2026 00:00:00 +0000\r\n"
        b"Message-ID: <bench.1@example.com>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"List-Unsubscribe: <https://example.com/u/1>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n\r\n")
# The headers mta signs in HEAD (with From over-signed), so both do the same hashing work.
INCLUDE = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version",
           b"content-type", b"list-unsubscribe", b"list-unsubscribe-post", b"from"]
LINE = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\r\n"


def message(size: int) -> bytes:
    return HEAD + LINE * max(1, -(-(size - len(HEAD)) // len(LINE)))


def rate(fn: Callable[[], object], seconds: float, windows: int = 5) -> float:
    """Calls per second: the best of `windows` windows of seconds/windows each (at least 3
    calls per window). The best window is the one other processes disturbed least: this
    machine is shared, and a mean would measure the neighbours."""
    fn()  # warm up
    best = 0.0
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while n < 3 or (time.perf_counter() - start < seconds / windows and n < 200_000):
            fn()
            n += 1
        best = max(best, n / (time.perf_counter() - start))
    return best


async def loop_question(signer: DkimSigner, msg: bytes, n: int) -> None:
    async def run(label: str, sign: Callable[[bytes], object]) -> None:
        worst = 0.0
        stop = False

        async def ticker() -> None:
            nonlocal worst
            while not stop:
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                worst = max(worst, time.perf_counter() - t - 0.001)

        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0.01)
        start, cpu = time.perf_counter(), time.thread_time()
        sem = asyncio.Semaphore(8)  # like 8 SMTP sessions finishing DATA at once

        async def one() -> None:
            async with sem:
                r = sign(msg)
                if asyncio.iscoroutine(r):
                    await r
                else:
                    await asyncio.sleep(0)

        await asyncio.gather(*(one() for _ in range(n)))
        elapsed, cpu = time.perf_counter() - start, time.thread_time() - cpu
        stop = True
        await tick
        # Loop-thread CPU per message: what signing costs the event loop, whatever the
        # neighbours do (the ticker's own share is included and is the same in both rows).
        print(f"  {label:<22} {n / elapsed:6.0f} msg/s  loop CPU {cpu / n * 1e6:5.0f} us/msg"
              f"  worst loop delay {worst * 1000:5.1f} ms")

    now = time.time()
    await run("inline signer.sign", lambda m: signer.sign(m, now))
    await run("sign_async (thread)", lambda m: sign_async(signer, m, now))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        keyfiles = {}
        for alg in (RSA, ED25519):
            _, data = generate_key(alg)
            p = Path(tmp) / alg
            p.write_bytes(data)
            keyfiles[alg] = p
        print(f"cpu: {os.cpu_count()} cores visible; one thread per measurement")
        print(f"{'algorithm':<16}{'size':>7}{'stock dkimpy/s':>16}{'mta/s':>10}{'x':>7}"
              f"{'raw key/s':>11}")
        signers = {}
        for alg in (RSA, ED25519):
            sel, keyf = ("selector", "key") if alg == RSA else ("ed25519_selector",
                                                                 "ed25519_key")
            cfg = DkimDomainConfig(algorithms=[alg], **{sel: "s1", keyf: keyfiles[alg]})
            signer = signers[alg] = DkimSigner.from_config({"example.com": cfg})
            pem = keyfiles[alg].read_bytes()
            for size in (2_000, 100_000):
                msg = message(size)
                stock = rate(lambda m=msg, a=alg, k=pem: dkim.sign(
                    m, b"s1", b"example.com", k, signature_algorithm=a.encode(),
                    canonicalize=(b"relaxed", b"relaxed"), include_headers=INCLUDE),
                    args.seconds if alg == ED25519 else max(args.seconds, 1.0))
                now = time.time()
                mine = rate(lambda m=msg, s=signer, t=now: s.sign(m, t), args.seconds)
                # The ceiling: the bare OpenSSL signature of a digest, no DKIM work.
                key = signer.domain_signing("example.com").current[0].key  # type: ignore[union-attr]
                raw = rate(lambda k=key: k.sign_digest(b"\x01" * 32), args.seconds / 2)
                print(f"{alg:<16}{size // 1000:>5}KB{stock:>16.0f}{mine:>10.0f}"
                      f"{mine / stock:>7.1f}{raw:>11.0f}")
        print("event loop, RSA-2048 2 KB, 2000 messages, 8 at a time:")
        asyncio.run(loop_question(signers[RSA], message(2_000), 2000))
        print("event loop, RSA-2048 100 KB, 500 messages, 8 at a time:")
        asyncio.run(loop_question(signers[RSA], message(100_000), 500))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
