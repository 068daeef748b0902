"""Shared pieces of tests/dkim: session keys, a sample message, config shortcuts."""

from __future__ import annotations

from pathlib import Path

from mta.config import DkimDomainConfig
from mta.dkim.keys import ED25519, RSA, generate_key, txt_value


class Keys:
    """Key files on disk, by name: rsa1, rsa2 (RSA-2048), ed1, ed2 (Ed25519)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.path: dict[str, Path] = {}
        self.txt: dict[str, bytes] = {}
        for name, alg in (("rsa1", RSA), ("rsa2", RSA), ("ed1", ED25519), ("ed2", ED25519)):
            key, data = generate_key(alg)
            p = root / f"{name}.key"
            p.write_bytes(data)
            p.chmod(0o600)
            self.path[name] = p
            self.txt[name] = txt_value(key).encode()


def rsa_cfg(keys: Keys, **kw: object) -> DkimDomainConfig:
    return DkimDomainConfig(**{"selector": "s1", "key": keys.path["rsa1"], **kw})


MESSAGE = (b"From: Alice <alice@example.com>\r\n"
           b"To: bob@example.org\r\n"
           b"Subject: Lunch\r\n"
           b"Date: Sun, 22 Nov 2026 10:00:00 +0000\r\n"
           b"Message-ID: <lunch.1@example.com>\r\n"
           b"MIME-Version: 1.0\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n"
           b"List-Unsubscribe: <https://example.com/u/1>\r\n"
           b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
           b"\r\n"
           b"Noon  at the usual place?\r\n"
           b"\r\n"
           b"-- Alice\r\n")


def with_from(message: bytes, from_value: bytes) -> bytes:
    head, _, rest = message.partition(b"\r\n")
    assert head.startswith(b"From:")
    return b"From: " + from_value + b"\r\n" + rest
