"""[webhooks]: how events are batched, posted and retried to the platform's endpoints
(mta/webhooks). The endpoints themselves are managed at run time (`mta webhooks add`) and
kept in the policy store, not here."""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration

__all__ = ["WebhooksConfig"]


@dataclass(frozen=True)
class WebhooksConfig:
    # Off: no outbox is opened and no event is kept for endpoints.
    enabled: bool = True
    # One POST carries up to batch_size events, waiting at most batch_wait for them: at
    # 1,000 events/s that is 5 requests a second instead of 1,000.
    batch_size: int = 100
    batch_wait: Duration = 0.2
    # A receiver should answer at once and work later; Svix and Stripe wait 15-30 s.
    timeout: Duration = 15.0
    # Failed posts are retried with exponential backoff from retry_initial up to
    # retry_max between tries, for retry_for; then the batch goes to the failed list
    # (`mta webhooks failed|replay`). 24 h covers a receiver's bad day.
    retry_initial: Duration = 5.0
    retry_max: Duration = 3600.0
    retry_for: Duration = 86400.0
    # An endpoint failing without a single success this long is disabled (with a
    # `webhook_disabled` event); Svix disables after 5 days.
    disable_after: Duration = 5 * 86400.0
    # The outbox is bounded per endpoint: past this many undelivered events, new events
    # for that endpoint are dropped (counted in mta_webhook_dropped_events_total) so a
    # dead receiver cannot fill the disk.
    max_pending: int = 1_000_000
    # Endpoints added with a tenant's API key may not point at loopback, private or
    # link-local addresses (the admin API itself listens there). True for tests and
    # single-host platforms whose receiver is local.
    allow_private: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError("batch_size: must be between 1 and 10000")
        for name in ("batch_wait", "timeout", "retry_initial", "retry_max", "retry_for",
                     "disable_after"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max: must not be less than retry_initial")
        if self.max_pending < 1:
            raise ValueError("max_pending: must be at least 1")
