"""Volume licences: an Ed25519-signed statement of who may send how much.

A licence file is JSON: `{"licence": {...}, "signature": "<base64>"}`. The signature covers
the canonical JSON of the "licence" object (sorted keys, no spaces), so any edit to any
field (or to the signature) makes verification fail. Keys are raw 32-byte Ed25519 keys in
base64: the public one goes into `[policy] licence_public_key`, the private one stays with
whoever issues licences (`mta licence issue`).

This module only signs, verifies and describes; counting volume is the engine's job.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

__all__ = [
    "Licence",
    "LicenceError",
    "generate_licence_keypair",
    "issue_licence",
    "load_licence",
    "parse_licence",
    "show_licence",
]

_FORMAT_VERSION = 1


class LicenceError(Exception):
    """The licence cannot be used; the message says why, for operators."""


@dataclass(frozen=True)
class Licence:
    licensee: str
    valid_from: date
    valid_until: date  # inclusive: the licence works through this whole day
    monthly_volume: int  # accepted recipients per calendar month; 0 = unlimited
    max_connections: int  # concurrent outbound SMTP connections; 0 = unlimited
    id: str = ""
    issued: date | None = None

    def state_on(self, day: date) -> str:
        """"valid", "not yet valid" or "expired" on a local calendar day."""
        if day < self.valid_from:
            return "not yet valid"
        if day > self.valid_until:
            return "expired"
        return "valid"

    def _payload(self) -> dict[str, object]:
        d = asdict(self)
        for k in ("valid_from", "valid_until", "issued"):
            d[k] = d[k].isoformat() if d[k] else None
        d["version"] = _FORMAT_VERSION
        return d


def _canonical(payload: dict[str, object]) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True).encode()


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise LicenceError(f"{what} is not valid base64") from None


def generate_licence_keypair() -> tuple[str, str]:
    """(private, public) as base64 of the raw 32-byte keys."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes_raw()
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def issue_licence(private_key: str, *, licensee: str, valid_from: date, valid_until: date,
                  monthly_volume: int, max_connections: int,
                  issued: date | None = None) -> str:
    """Sign a licence; returns the file text (`mta licence issue`)."""
    if valid_until < valid_from:
        raise LicenceError("valid_until is before valid_from")
    if monthly_volume < 0 or max_connections < 0:
        raise LicenceError("volumes cannot be negative")
    raw = _b64decode(private_key, "the private key")
    if len(raw) != 32:
        raise LicenceError("the private key must be 32 bytes (raw Ed25519, base64)")
    lic = Licence(licensee=licensee, valid_from=valid_from, valid_until=valid_until,
                  monthly_volume=monthly_volume, max_connections=max_connections,
                  id=uuid.uuid4().hex, issued=issued or date.today())
    payload = lic._payload()
    sig = Ed25519PrivateKey.from_private_bytes(raw).sign(_canonical(payload))
    return json.dumps({"licence": payload, "signature": base64.b64encode(sig).decode()},
                      indent=2, sort_keys=True) + "\n"


def parse_licence(text: str, public_key: str) -> Licence:
    """Verify and decode licence file text; raises LicenceError saying what is wrong."""
    if not public_key:
        raise LicenceError("no licence_public_key configured to verify the licence with")
    raw_key = _b64decode(public_key, "licence_public_key")
    if len(raw_key) != 32:
        raise LicenceError("licence_public_key must be 32 bytes (raw Ed25519, base64)")
    try:
        doc = json.loads(text)
        payload, sig_b64 = doc["licence"], doc["signature"]
        if not isinstance(payload, dict) or not isinstance(sig_b64, str):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise LicenceError("not a licence file (expected JSON with licence and "
                           "signature)") from None
    sig = _b64decode(sig_b64, "the signature")
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(sig, _canonical(payload))
    except InvalidSignature:
        raise LicenceError("signature does not verify: the licence was altered or "
                           "issued for another key") from None
    try:
        if payload.get("version") != _FORMAT_VERSION:
            raise ValueError(f"unsupported licence version {payload.get('version')!r}")
        return Licence(
            licensee=str(payload["licensee"]),
            valid_from=date.fromisoformat(payload["valid_from"]),
            valid_until=date.fromisoformat(payload["valid_until"]),
            monthly_volume=int(payload["monthly_volume"]),
            max_connections=int(payload["max_connections"]),
            id=str(payload.get("id", "")),
            issued=date.fromisoformat(payload["issued"]) if payload.get("issued") else None,
        )
    except (KeyError, ValueError, TypeError) as e:
        raise LicenceError(f"malformed licence: {e}") from None


def load_licence(path: Path, public_key: str) -> Licence:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise LicenceError(f"cannot read licence file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise LicenceError(f"licence file {path} is not UTF-8 text") from None
    try:
        return parse_licence(text, public_key)
    except LicenceError as e:
        raise LicenceError(f"licence file {path}: {e}") from None


def show_licence(text: str, public_key: str, today: date | None = None) -> str:
    """Human-readable description for `mta licence show`; raises LicenceError if invalid."""
    lic = parse_licence(text, public_key)
    today = today or date.today()
    vol = f"{lic.monthly_volume:,} recipients/month" if lic.monthly_volume else "unlimited"
    conns = str(lic.max_connections) if lic.max_connections else "unlimited"
    return "\n".join([
        f"licensee:        {lic.licensee}",
        f"id:              {lic.id}",
        f"issued:          {lic.issued.isoformat() if lic.issued else '-'}",
        f"valid:           {lic.valid_from.isoformat()} .. {lic.valid_until.isoformat()}"
        f" ({lic.state_on(today)} on {today.isoformat()})",
        f"monthly volume:  {vol}",
        f"max connections: {conns}",
        "signature:       ok",
    ])
