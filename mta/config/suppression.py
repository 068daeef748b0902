"""[suppression]: what happens to a recipient on a suppression list, and when a hard bounce
puts one there (mta/suppress)."""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration

__all__ = ["SuppressionConfig"]

ACTIONS = ("reject", "drop")


@dataclass(frozen=True)
class SuppressionConfig:
    # "reject": RCPT answers 550 5.7.1 naming the list and the reason (the sender learns
    # the address is suppressed); "drop": 250, and the recipient is silently not sent.
    action: str = "reject"
    # How long a hard bounce keeps an address suppressed (0: until removed). 30 days: a
    # mailbox that did not exist may be created again (a new employee, a reused alias).
    hard_bounce_expiry: Duration = 30 * 86400.0
    # Hard bounces of one address (per tenant) within hard_bounce_window that suppress it;
    # 1: the first one does (a 5.1.1 is definite).
    hard_bounce_count: int = 1
    hard_bounce_window: Duration = 7 * 86400.0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"action: must be one of {', '.join(ACTIONS)}, not "
                             f"{self.action!r}")
        if self.hard_bounce_count < 1:
            raise ValueError("hard_bounce_count: must be at least 1")
        if self.hard_bounce_expiry < 0:
            raise ValueError("hard_bounce_expiry: must not be negative")
        if self.hard_bounce_window <= 0:
            raise ValueError("hard_bounce_window: must be positive")
