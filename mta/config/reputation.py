"""[reputation]: the escalation ladder that limits and suspends a tenant whose mail bounces,
draws complaints or is blocked as spam (mta/reputation). Defaults follow mailbox-provider
guidance: Gmail and Yahoo ask bulk senders to stay under 0.1% complaints and never reach
0.3%; a list with more than ~2% unknown users has not been cleaned; spam blocks above a
few percent mean the receivers already distrust the mail."""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.config.values import Duration

__all__ = ["METRICS", "OVERRIDE_KEYS", "STATES", "ReputationConfig", "ThresholdsConfig",
           "check_steps"]

# In order; each state's action includes the ones before it.
STATES = ("ok", "warned", "limited", "suspended_class", "suspended", "terminated")
METRICS = ("hard_bounce", "complaint", "spam_block")
# What a plan, a tenant or a run-time override may set (mta/reputation/thresholds.py).
OVERRIDE_KEYS = (*METRICS, "min_sample", "limited_per_hour", "suspend_class", "exempt")


def check_steps(name: str, steps: list[float]) -> None:
    """One metric's four thresholds (ValueError naming the metric)."""
    if len(steps) != 4 or any(not 0 <= t <= 1 for t in steps):
        raise ValueError(f"{name}: must be four fractions between 0 and 1 (warned, "
                         "limited, suspended_class, suspended; 0 = never)")
    set_ = [t for t in steps if t > 0]
    if set_ != sorted(set_):
        raise ValueError(f"{name}: thresholds must rise from warned to suspended")


@dataclass(frozen=True)
class ThresholdsConfig:
    """[reputation.plans.NAME] and [reputation.tenants.NAME]: what differs from the global
    thresholds for the tenants on a plan, or for one tenant and its sub-accounts (unset:
    the next layer's; tenant > parent chain > plan > [reputation]). A transactional-only
    tenant may take stricter figures than a marketing plan, or `exempt = true`."""

    hard_bounce: list[float] | None = None
    complaint: list[float] | None = None
    spam_block: list[float] | None = None
    min_sample: int | None = None
    limited_per_hour: int | None = None
    suspend_class: str | None = None
    exempt: bool | None = None

    def __post_init__(self) -> None:
        for name in METRICS:
            steps = getattr(self, name)
            if steps is not None:
                check_steps(name, steps)
        if self.min_sample is not None and self.min_sample < 1:
            raise ValueError("min_sample: must be at least 1")
        if self.limited_per_hour is not None and self.limited_per_hour < 0:
            raise ValueError("limited_per_hour: must not be negative")
        if self.suspend_class is not None and not self.suspend_class:
            raise ValueError("suspend_class: must not be empty")

    def values(self) -> dict[str, object]:
        """The keys set at this layer."""
        return {k: getattr(self, k) for k in OVERRIDE_KEYS if getattr(self, k) is not None}


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
    # Thresholds per plan (a name in [plans]) and per tenant (a name in [tenants]; its
    # sub-accounts inherit them); run-time overrides: `mta policy reputation T --set`.
    plans: dict[str, ThresholdsConfig] = field(default_factory=dict)
    tenants: dict[str, ThresholdsConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.windows or any(w <= 0 for w in self.windows):
            raise ValueError("windows: must be one or more positive durations")
        if self.min_sample < 1:
            raise ValueError("min_sample: must be at least 1")
        for name in METRICS:
            check_steps(name, getattr(self, name))
        if self.limited_per_hour < 0:
            raise ValueError("limited_per_hour: must not be negative")
        if self.step_down_after <= 0 or self.interval <= 0:
            raise ValueError("step_down_after and interval: must be positive")
