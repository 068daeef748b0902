"""Adaptive feedback: each path's concurrency window and rate scale follow the receiver.

The idea of Postfix's qmgr_feedback.c, in AIMD form (additive increase, multiplicative
decrease, as TCP congestion control):

- a "slow down" signal (reply category `rate_limited` or `connection_failure` from the
  bounce classifier: 421s, 4.7.x throttling texts, refused connections) halves the window
  and the rate scale, at most once per `decrease_interval` so that a burst of replies from
  one event counts as one decrease (TCP: one decrease per round trip);
- any other answer counts as a success: the window grows by 1/window (Postfix's default
  positive feedback, so +1 per window's worth of deliveries) and the rate scale by
  `rate_step`; neither ever exceeds the configured value (scale 1.0 = the configured rate);
- `suspend_after` signals in a row with no success between them make the path dead for
  `suspend_duration` (the dead-site timer), keeping the reply that killed it; when the timer
  runs out the path restarts with a window of 1.

Every change is passed to `on_change` (the dispatcher turns it into an event and a metric).
State is per process: each worker learns from the replies it sees.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from mta.clock import Clock
from mta.rfc5321.reply import Reply
from mta.shaping.rules import PathConfig

__all__ = ["SLOWDOWN_CATEGORIES", "Adaptive", "Change"]

SLOWDOWN_CATEGORIES = frozenset({"rate_limited", "connection_failure"})


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    kind: str              # "decrease" | "increase" | "suspend" | "resume"
    window: int
    rate_scale: float
    category: str = ""
    reply: Reply | None = None
    until: float | None = None  # for "suspend": epoch seconds


@dataclass(slots=True)
class _State:
    window: float
    scale: float = 1.0
    streak: int = 0
    last_decrease: float = -math.inf
    dead_until: float | None = None
    dead_reply: Reply | None = None
    dead_category: str = ""


class Adaptive:
    def __init__(self, clock: Clock, on_change: Callable[[Change], None] | None = None, *,
                 decrease_interval: float = 1.0, rate_step: float = 0.01,
                 min_scale: float = 1 / 64) -> None:
        """rate_step 0.01: 100 successes take the rate from nothing back to the configured
        one. min_scale 1/64: six halvings; below that the dead-site timer is the tool."""
        self.clock = clock
        self.on_change = on_change
        self.decrease_interval = decrease_interval
        self.rate_step = rate_step
        self.min_scale = min_scale
        self._paths: dict[str, _State] = {}

    def _state(self, path: PathConfig) -> _State:
        st = self._paths.get(path.key)
        if st is None:
            st = self._paths[path.key] = _State(window=float(path.connection_limit))
        if st.dead_until is not None and self.clock.now() >= st.dead_until:
            st.dead_until, st.dead_reply, st.dead_category = None, None, ""
            st.window, st.streak = 1.0, 0
            self._emit(path, st, "resume")
        st.window = min(st.window, float(path.connection_limit))  # config may have shrunk
        return st

    def _emit(self, path: PathConfig, st: _State, kind: str, **extra: Any) -> None:
        if self.on_change is not None:
            self.on_change(Change(path.key, kind, int(st.window), st.scale, **extra))

    def window(self, path: PathConfig) -> int:
        """Connections the path may have open now (0 while dead)."""
        st = self._state(path)
        return 0 if st.dead_until is not None else max(1, int(st.window))

    def rate_scale(self, path: PathConfig) -> float:
        return self._state(path).scale

    def dead(self, path: PathConfig) -> tuple[float, str, Reply | None] | None:
        """(until, category, reply) while the dead-site timer runs, else None."""
        st = self._state(path)
        if st.dead_until is None:
            return None
        return st.dead_until, st.dead_category, st.dead_reply

    def revive(self, keys: Iterable[str] | None = None) -> int:
        """End the dead-site timers of these paths (all: None) now: `mta queue flush`, the
        operator says the destinations are back. Windows restart at one connection, as
        after a timer."""
        revived = 0
        chosen = self._paths if keys is None else {k: self._paths[k] for k in keys
                                                   if k in self._paths}
        for st in chosen.values():
            if st.dead_until is not None:
                st.dead_until = self.clock.now()
                revived += 1
        return revived

    def record(self, path: PathConfig, category: str, reply: Reply | None = None) -> None:
        """Feed one outcome (a reply's category, or `connection_failure`) into the loop."""
        st = self._state(path)
        now = self.clock.now()
        if category in SLOWDOWN_CATEGORIES:
            st.streak += 1
            if now - st.last_decrease >= self.decrease_interval:
                st.last_decrease = now
                st.window = max(1.0, st.window / 2)
                st.scale = max(self.min_scale, st.scale / 2)
                self._emit(path, st, "decrease", category=category, reply=reply)
            if st.streak >= path.suspend_after and st.dead_until is None:
                st.dead_until = now + path.suspend_duration
                st.dead_reply, st.dead_category = reply, category
                self._emit(path, st, "suspend", category=category, reply=reply,
                           until=st.dead_until)
            return
        st.streak = 0
        before = (int(st.window), int(st.scale * 10))
        st.window = min(float(path.connection_limit), st.window + 1 / max(st.window, 1.0))
        st.scale = min(1.0, st.scale + self.rate_step)
        if (int(st.window), int(st.scale * 10)) > before:
            self._emit(path, st, "increase", category=category)

    def explain(self, path: PathConfig) -> dict[str, Any]:
        st = self._state(path)
        return {"window": self.window(path), "window_exact": round(st.window, 3),
                "rate_scale": round(st.scale, 4), "slowdown_streak": st.streak,
                "dead_until": st.dead_until, "dead_category": st.dead_category or None,
                "dead_reply": str(st.dead_reply) if st.dead_reply else None}
