"""The escalation ladder, as pure functions: figures in, a state out. No I/O, no clock of
its own (the caller passes `now`), so every rule is tested without sockets.

    ok -> warned -> limited -> suspended_class -> suspended -> terminated

A tenant climbs at once to the highest level any metric in any window reaches; it steps
down one level at a time, each after `step_down_after` without reaching its current level
again. A state set by hand (`mta policy escalate`) stays until `mta policy clear`;
"terminated" is only ever set by hand.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from mta.config.reputation import METRICS, STATES, ReputationConfig
from mta.reputation.thresholds import Thresholds

__all__ = ["Figures", "State", "decide", "level_of", "rates"]

TERMINATED = STATES.index("terminated")


@dataclass(frozen=True)
class Figures:
    """One window's counts for one tenant."""

    window: float
    delivered: int = 0
    bounced: int = 0
    attempts: int = 0
    hard_bounce: int = 0
    spam_block: int = 0
    complaint: int = 0

    @property
    def sample(self) -> int:
        return self.delivered + self.bounced

    def rates(self) -> dict[str, float]:
        return rates(self)

    def public(self) -> dict[str, Any]:
        return {**asdict(self), "sample": self.sample,
                **{f"{k}_rate": round(v, 6) for k, v in self.rates().items()}}


def rates(f: Figures) -> dict[str, float]:
    return {"hard_bounce": f.hard_bounce / f.sample if f.sample else 0.0,
            "complaint": f.complaint / (f.delivered or f.sample) if f.sample else 0.0,
            "spam_block": f.spam_block / f.attempts if f.attempts else 0.0}


def level_of(figures: list[Figures], cfg: Thresholds | ReputationConfig) -> tuple[int, str]:
    """The highest level the figures reach, and why ("complaint 0.40% over 1h >= 0.30%").
    `cfg`: the tenant's thresholds (mta.reputation.thresholds.thresholds_for), or the
    global [reputation] ones."""
    best, why = 0, ""
    for f in figures:
        if f.sample < cfg.min_sample:
            continue
        for metric, rate in f.rates().items():
            for i, threshold in enumerate(getattr(cfg, metric)):
                if threshold > 0 and rate >= threshold and i + 1 > best:
                    best = i + 1
                    why = (f"{metric.replace('_', ' ')} {rate:.2%} over {_span(f.window)} "
                           f">= {threshold:.2%} ({f.sample} final outcomes)")
    return best, why


def _span(seconds: float) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class State:
    level: int = 0
    since: float = 0.0
    # The last time the figures reached the current level: the step-down timer's start.
    last_breach: float = 0.0
    reason: str = ""
    manual: bool = False
    # Counts from before this instant are ignored (set by `clear`: a fresh start).
    cleared_at: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return STATES[self.level]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> State:
        if not text:
            return cls()
        d = json.loads(text)
        known = set(cls.__dataclass_fields__)
        s = cls(**{k: v for k, v in d.items() if k in known})
        return s if 0 <= s.level < len(STATES) else cls()

    def moved(self, level: int, now: float, reason: str, by: str, *,
              manual: bool = False, cleared: bool = False) -> State:
        entry = {"time": now, "from": self.name, "to": STATES[level], "reason": reason,
                 "by": by}
        return replace(self, level=level, since=now, last_breach=now, reason=reason,
                       manual=manual, cleared_at=now if cleared else self.cleared_at,
                       history=[*self.history[-19:], entry])


def decide(state: State, target: int, why: str, now: float,
           cfg: ReputationConfig) -> State:
    """The state after one evaluation (the same object when nothing changes)."""
    if state.manual or state.level >= TERMINATED:
        return state
    target = min(target, TERMINATED - 1)
    if target > state.level:
        return state.moved(target, now, why, "auto")
    if state.level == 0:
        return state
    if target == state.level:
        return replace(state, last_breach=now)
    if now - state.last_breach >= cfg.step_down_after:
        return state.moved(state.level - 1, now, f"clean for {_span(cfg.step_down_after)}",
                           "auto")
    return state


__all__ += ["METRICS", "STATES", "TERMINATED"]
