"""Standard Webhooks signatures (https://www.standardwebhooks.com/): what lets a receiver
check, with any of the spec's libraries, that a request came from us and is fresh.

    secret              "whsec_" + base64(24 random bytes), one per endpoint
    webhook-id          "msg_" + random, the same on every retry of one batch
    webhook-timestamp   Unix seconds of this attempt
    webhook-signature   "v1," + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["PREFIX", "headers", "new_secret", "new_webhook_id", "sign"]

PREFIX = "whsec_"


def new_secret() -> str:
    return PREFIX + base64.b64encode(os.urandom(24)).decode()


def new_webhook_id() -> str:
    # 128 random bits, URL-safe: unique across nodes without coordination.
    return "msg_" + base64.b32encode(os.urandom(16)).decode().rstrip("=").lower()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret[len(PREFIX):] if secret.startswith(PREFIX) else secret)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(_key(secret), f"{webhook_id}.{timestamp}.".encode() + body,
                   hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(secret, webhook_id, timestamp, body),
            "content-type": "application/json"}
