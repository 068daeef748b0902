"""[webhooks] (mta/webhooks) and [log.rotate] (mta/observe/rotate): event delivery out.

Endpoints themselves (url, secret, filter) are data, not config: they live in
<spool>/webhooks.db and are managed with `mta webhooks` or /api/v1/webhooks.
"""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration, Size

__all__ = ["EventsRotateConfig", "WebhooksConfig"]


@dataclass(frozen=True)
class WebhooksConfig:
    """[webhooks]: POST events to HTTP endpoints (Standard Webhooks signatures)."""

    # Off: no outbox, no sender; endpoints can still be managed.
    enabled: bool = True
    # Events per POST (a JSON array) and how long a partial batch waits for more.
    batch_max: int = 100
    batch_wait: Duration = 0.2
    # One POST's deadline; a timeout counts as a failure to retry.
    timeout: Duration = 10.0
    # Retries on timeouts, connection errors, 429 and 5xx back off exponentially from
    # retry_min to retry_max; after retry_for an event goes to the dead-letter list.
    retry_min: Duration = 1.0
    retry_max: Duration = 300.0
    retry_for: Duration = 86400.0
    # An endpoint failing without one success for this long is disabled (event
    # "webhook_disabled"); 0 = never.
    disable_after: Duration = 259200.0
    # Outbox rows across all endpoints. When full the OLDEST pending rows are dropped
    # (counted in mta_webhook_dropped_total): a dead receiver must never slow SMTP.
    outbox_max: int = 1_000_000
    # Group commit of the outbox: events are acknowledged once on disk, at most this late.
    commit_interval: Duration = 0.05

    def __post_init__(self) -> None:
        if self.batch_max < 1:
            raise ValueError("batch_max must be at least 1")
        if self.outbox_max < 1:
            raise ValueError("outbox_max must be at least 1")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not 0 < self.retry_min <= self.retry_max:
            raise ValueError("need 0 < retry_min <= retry_max")


@dataclass(frozen=True)
class EventsRotateConfig:
    """[log.rotate]: the events log's own rotation (0/0 = none: external logrotate
    with SIGUSR1 or SIGHUP to reopen)."""

    # Rotate when the file reaches this size, or is this old; 0 = not on that ground.
    max_size: Size = 0
    interval: Duration = 0.0
    # Rotated files kept (oldest removed first).
    keep: int = 7
    # "gzip", "zstd" (needs the zstandard package) or "none".
    compress: str = "gzip"

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("keep must be at least 1")
        if self.compress not in ("gzip", "zstd", "none"):
            raise ValueError("compress must be one of gzip, zstd, none")
        if self.compress == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ValueError("compress = \"zstd\" needs the zstandard package") from None
