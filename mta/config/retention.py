"""[retention]: how long mta keeps what it knows about finished mail (personal data: the
addresses in envelopes, events and reports), each kind on its own clock, purged by the
daemon's maintenance in small batches so the queue never waits.

Bodies are not here: a message's body is deleted as soon as its last recipient's fate is
final (delivered, bounced or expired), whatever these say."""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration

__all__ = ["RetentionConfig"]


@dataclass(frozen=True)
class RetentionConfig:
    # Finished messages' rows (envelope, recipients, last replies: `mta queue show`).
    # 0: [spool] keep_done (1 day), the older key for the same thing.
    metadata: Duration = 0.0
    # Rotated events-log files older than this are deleted (0: only [log.rotate] keep
    # counts). The current file is rotated by [log.rotate] or logrotate.
    events: Duration = 0.0
    # Webhook batches that failed for good (`mta webhooks failed`) are dropped after this.
    webhook_failed: Duration = 30 * 86400.0
    # The key of `mta gdpr erase` (mta/gdpr/key.py): an erased address is kept only as its
    # HMAC under it, so suppression still refuses it. "": gdpr.key in the spool directory,
    # made at the first erasure. Nodes that share Redis must share this file.
    gdpr_key_file: str = ""

    def __post_init__(self) -> None:
        for name in ("metadata", "events", "webhook_failed"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must not be negative")
