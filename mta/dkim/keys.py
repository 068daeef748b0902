"""DKIM key material: loading private keys, generating them, and their public half as DNS
publishes it (`selector._domainkey.domain. IN TXT "v=DKIM1; k=rsa; p=..."`).

Keys are parsed once, with `cryptography` (OpenSSL), into objects that sign a finished
SHA-256 digest: RSASSA-PKCS1-v1_5 (RFC 6376 3.3.1) or Ed25519 over the digest (RFC 8463 3).
Also holds `keygen_main`, the `mta dkim keygen` command.
"""

from __future__ import annotations

import base64
import binascii
import os
import sys
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

__all__ = [
    "ALGORITHMS",
    "ED25519",
    "RSA",
    "DkimKeyError",
    "Ed25519SigningKey",
    "RsaSigningKey",
    "SigningKey",
    "generate_key",
    "keygen_main",
    "load_private_key",
    "txt_record",
    "txt_value",
]

RSA = "rsa-sha256"
ED25519 = "ed25519-sha256"
ALGORITHMS = (RSA, ED25519)

# RFC 8301 3.2: signers MUST use at least 1024 bits and SHOULD use 2048; 2048 is also what
# fits a TXT record without DNS tricks and what Gmail and Microsoft publish.
RSA_MIN_BITS = 1024
RSA_KEYGEN_BITS = 2048


class DkimKeyError(Exception):
    """A key that cannot be used; the message says what is wrong, without the config key."""


class SigningKey(Protocol):
    algorithm: str  # "rsa-sha256" or "ed25519-sha256"
    k_tag: str  # the k= of the DNS record

    def sign_digest(self, digest: bytes) -> bytes:
        """Sign a finished SHA-256 digest (what dkimpy's header hash yields)."""
        ...

    def public_p(self) -> str:
        """The p= value the DNS record must carry for this key."""
        ...


class RsaSigningKey:
    """RSA private key held by OpenSSL; signs ~25x faster than dkimpy's pure-Python RSA."""

    algorithm = RSA
    k_tag = "rsa"

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key
        self.bits = key.key_size
        self._pad = padding.PKCS1v15()
        self._prehashed = Prehashed(hashes.SHA256())

    def sign_digest(self, digest: bytes) -> bytes:
        # Prehashed: the digest is wrapped in the DigestInfo of RFC 8017 9.2, exactly what
        # dkimpy's EMSA_PKCS1_v1_5_encode builds, so the signature bytes are identical.
        return self._key.sign(digest, self._pad, self._prehashed)

    def public_p(self) -> str:
        # SubjectPublicKeyInfo DER, as `openssl rsa -pubout` and every DKIM generator write.
        der = self._key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode("ascii")


class Ed25519SigningKey:
    """Ed25519 private key (RFC 8463): signs the SHA-256 digest of the header hash input."""

    algorithm = ED25519
    k_tag = "ed25519"

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def sign_digest(self, digest: bytes) -> bytes:
        return self._key.sign(digest)

    def public_p(self) -> str:
        raw = self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode("ascii")

    def private_seed_b64(self) -> bytes:
        """The private key as dkimpy's dknewkey writes it: base64 of the 32-byte seed."""
        raw = self._key.private_bytes(serialization.Encoding.Raw,
                                      serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        return base64.b64encode(raw)


def parse_private_key(data: bytes, algorithm: str) -> SigningKey:
    """Key file contents -> signing key; DkimKeyError says what is wrong with them."""
    if algorithm == RSA:
        key = _load_pem(data, "RSA")
        if not isinstance(key, rsa.RSAPrivateKey):
            raise DkimKeyError(f"not an RSA private key ({_kind(key)})")
        if key.key_size < RSA_MIN_BITS:
            raise DkimKeyError(f"RSA key of {key.key_size} bits: RFC 8301 requires at "
                               f"least {RSA_MIN_BITS} (2048 recommended)")
        return RsaSigningKey(key)
    if algorithm == ED25519:
        if b"-----BEGIN" in data:
            key = _load_pem(data, "Ed25519")
            if not isinstance(key, ed25519.Ed25519PrivateKey):
                raise DkimKeyError(f"not an Ed25519 private key ({_kind(key)})")
            return Ed25519SigningKey(key)
        try:
            seed = base64.b64decode(data.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise DkimKeyError("not an Ed25519 key: expected base64 of a 32-byte seed "
                               "(as `mta dkim keygen` or dknewkey write) or PEM") from None
        if len(seed) != 32:
            raise DkimKeyError(f"not an Ed25519 key: the base64 holds {len(seed)} bytes, "
                               "expected a 32-byte seed")
        return Ed25519SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(seed))
    raise DkimKeyError(f"unknown algorithm {algorithm!r}: expected one of "
                       + ", ".join(ALGORITHMS))


def load_private_key(path: Path, algorithm: str) -> SigningKey:
    """Read and parse a key file (at start-up only: this reads the disk)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DkimKeyError(f"cannot read {path}: {e.strerror}") from None
    try:
        return parse_private_key(data, algorithm)
    except DkimKeyError as e:
        raise DkimKeyError(f"{path}: {e}") from None


def _load_pem(data: bytes, what: str) -> object:
    if b"ENCRYPTED" in data:
        raise DkimKeyError("the key is encrypted; mta needs it unencrypted (mode 0600)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise DkimKeyError(f"not a PEM {what} private key") from None


def _kind(key: object) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", " key")


def generate_key(algorithm: str) -> tuple[SigningKey, bytes]:
    """A new key and the bytes of its key file."""
    if algorithm == RSA:
        k = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEYGEN_BITS)
        # PKCS#1 ("BEGIN RSA PRIVATE KEY"): readable by dkimpy, OpenDKIM and OpenSSL alike.
        pem = k.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
        return RsaSigningKey(k), pem
    if algorithm == ED25519:
        key = Ed25519SigningKey(ed25519.Ed25519PrivateKey.generate())
        return key, key.private_seed_b64() + b"\n"
    raise DkimKeyError(f"unknown algorithm {algorithm!r}: expected one of "
                       + ", ".join(ALGORITHMS))


def txt_value(key: SigningKey) -> str:
    """The TXT record's text: `v=DKIM1; k=rsa; p=...` (RFC 6376 3.6.1)."""
    return f"v=DKIM1; k={key.k_tag}; p={key.public_p()}"


def txt_record(selector: str, domain: str, key: SigningKey) -> str:
    """The zone-file line to publish; strings are at most 255 bytes (RFC 1035 3.3.14),
    which a 2048-bit RSA key exceeds, so it is split into several quoted strings."""
    value = txt_value(key)
    chunks = [value[i:i + 255] for i in range(0, len(value), 255)]
    name = f"{selector}._domainkey.{domain.rstrip('.')}."
    if len(chunks) == 1:
        return f'{name} IN TXT "{chunks[0]}"'
    body = "\n\t".join(f'"{c}"' for c in chunks)
    return f"{name} IN TXT ( {body} )"


_ALIASES = {"rsa": RSA, RSA: RSA, "ed25519": ED25519, ED25519: ED25519}


def keygen_main(domain: str, selector: str, algorithm: str, out_dir: str | Path) -> int:
    """`mta dkim keygen`: write a new private key (mode 0600) and print the DNS record.

    The key goes to OUT_DIR/DOMAIN.SELECTOR.key; an existing file is never overwritten
    (it may be the live key). Exit 0 on success, 1 on error (message on stderr).
    """
    alg = _ALIASES.get(algorithm.lower())
    if alg is None:
        print(f"mta dkim keygen: unknown algorithm {algorithm!r}: use rsa or ed25519",
              file=sys.stderr)
        return 1
    domain = domain.strip().rstrip(".").lower()
    if not domain or not selector or "/" in domain + selector:
        print("mta dkim keygen: domain and selector must be DNS names", file=sys.stderr)
        return 1
    out = Path(out_dir)
    path = out / f"{domain}.{selector}.key"
    key, data = generate_key(alg)
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        # O_EXCL: never replace a key that may be in use; 0600 from creation, not chmod after.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except FileExistsError:
        print(f"mta dkim keygen: {path} exists; not overwriting it", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"mta dkim keygen: cannot write {path}: {e.strerror}", file=sys.stderr)
        return 1
    sel_key, key_key = ("selector", "key") if alg == RSA else ("ed25519_selector",
                                                               "ed25519_key")
    print(f"; private key: {path}")
    print(f'; config: [dkim."{domain}"] {sel_key} = "{selector}", {key_key} = "{path}"')
    print(txt_record(selector, domain, key))
    return 0
