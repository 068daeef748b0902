"""Standard Webhooks (standardwebhooks.com) secrets and signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

__all__ = ["headers", "new_secret", "sign"]

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    if not secret.startswith(PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    return base64.b64decode(secret[len(PREFIX):], validate=True)


def check_secret(secret: str) -> None:
    """ValueError unless `secret` is whsec_<base64> of at least 16 bytes."""
    try:
        key = _key(secret)
    except (ValueError, TypeError) as e:
        raise ValueError(f"bad webhook secret: {e}") from None
    if len(key) < 16:
        raise ValueError("bad webhook secret: under 16 bytes")


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, msg_id, timestamp, body)}
