"""The erasure key: the operator secret that turns an erased address into a keyed hash.

After `mta gdpr erase`, mta keeps no address, only `hmac:<hex>` = HMAC-SHA256(key, the
address in lower case) where a suppression entry must survive, so RCPT still refuses it
(mta.suppress looks the recipient's hash up beside the address and its domain). Without
the key nobody can tell which address a hash stands for, short of guessing and hashing it
with the key. The key is `[retention] gdpr_key_file`, or `gdpr.key` in the spool
directory, made (32 random bytes, mode 0600) at the daemon's first start; nodes sharing Redis
must share the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

__all__ = ["PREFIX", "ErasureKey", "key_path"]

PREFIX = "hmac:"


def key_path(key_file: str, state_dir: str | Path) -> Path:
    return Path(key_file) if key_file else Path(state_dir) / "gdpr.key"


class ErasureKey:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the erasure key needs at least 16 bytes")
        self._secret = secret

    @classmethod
    def load(cls, path: Path) -> ErasureKey | None:
        """The key in `path`, or None if there is none yet (blocking: a thread)."""
        try:
            return cls(path.read_bytes())
        except FileNotFoundError:
            return None

    @classmethod
    def load_or_create(cls, path: Path) -> ErasureKey:
        """The key in `path`, made first if absent. Written whole under a temporary name,
        then linked into place (atomic and exclusive): workers starting together agree on
        one key, and none reads a key file still being written."""
        found = cls.load(path)
        if found is not None:
            return found
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secret)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
        except FileExistsError:
            return cls(path.read_bytes())  # another maker linked its whole key first
        finally:
            tmp.unlink(missing_ok=True)
        return cls(secret)

    def token(self, address: str) -> str:
        """`hmac:<64 hex>` of the normalised address."""
        text = address.strip().strip("<>").lower().encode()
        return PREFIX + hmac.new(self._secret, text, hashlib.sha256).hexdigest()

    def alias(self, address: str) -> str:
        """What replaces the address where a record must keep an address's shape (a header
        of a message kept for its other recipients, a sender in an event)."""
        return f"erased-{self.token(address)[len(PREFIX):][:16]}@erased.invalid"
