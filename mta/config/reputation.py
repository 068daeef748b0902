"""[reputation]: the escalation ladder that limits and suspends a tenant whose mail bounces,
draws complaints or is blocked as spam (mta/reputation). Defaults follow mailbox-provider
guidance: Gmail and Yahoo ask bulk senders to stay under 0.1% complaints and never reach
0.3%; a list with more than ~2% unknown users has not been cleaned; spam blocks above a
few percent mean the receivers already distrust the mail."""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.config.values import Duration

__all__ = ["STATES", "ReputationConfig"]

# In order; each state's action includes the ones before it.
STATES = ("ok", "warned", "limited", "suspended_class", "suspended", "terminated")
METRICS = ("hard_bounce", "complaint", "spam_block")


@dataclass(frozen=True)
class ReputationConfig:
    enabled: bool = True
    # Rolling windows the rates are computed over; the worst window decides.
    windows: list[Duration] = field(default_factory=lambda: [3600.0, 86400.0])
    # Final outcomes (delivered + bounced) a window needs before its rates count: ten
    # bounces of a tenant's first twenty messages say little.
    min_sample: int = 200
    # Thresholds per metric, as fractions, for warned / limited / suspended_class /
    # suspended (0: that step is never reached by this metric). hard_bounce: bounces of
    # unknown recipients over final outcomes; complaint: complaints over deliveries;
    # spam_block: replies the classifier calls spam_block over delivery attempts.
    hard_bounce: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.0, 0.10])
    complaint: list[float] = field(default_factory=lambda: [0.001, 0.002, 0.003, 0.005])
    spam_block: list[float] = field(default_factory=lambda: [0.02, 0.05, 0.10, 0.20])
    # "limited": this hourly message cap (a temporary operator limit, `mta policy limits`).
    limited_per_hour: int = 100
    # "suspended_class": the class suspended (mail of other classes still goes).
    suspend_class: str = "marketing"
    # A state steps down one level after its figures stay under its thresholds this long.
    step_down_after: Duration = 86400.0
    # How often the figures are evaluated (and this node's counts shared).
    interval: Duration = 60.0
    # Tenants the ladder never acts on (e.g. "default", the relay networks' own mail).
    exempt: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.windows or any(w <= 0 for w in self.windows):
            raise ValueError("windows: must be one or more positive durations")
        if self.min_sample < 1:
            raise ValueError("min_sample: must be at least 1")
        for name in METRICS:
            steps = getattr(self, name)
            if len(steps) != 4 or any(not 0 <= t <= 1 for t in steps):
                raise ValueError(f"{name}: must be four fractions between 0 and 1 (warned, "
                                 "limited, suspended_class, suspended; 0 = never)")
            set_ = [t for t in steps if t > 0]
            if set_ != sorted(set_):
                raise ValueError(f"{name}: thresholds must rise from warned to suspended")
        if self.limited_per_hour < 0:
            raise ValueError("limited_per_hour: must not be negative")
        if self.step_down_after <= 0 or self.interval <= 0:
            raise ValueError("step_down_after and interval: must be positive")
