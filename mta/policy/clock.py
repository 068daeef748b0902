"""Clock sources for policy decisions: the shared `mta.clock` ones, and a movable one.

Every time-dependent rule (calendar windows, lot expiry, licence validity, suspensions that
end) asks an injected clock (`mta.clock.Clock`), so tests move time forward instead of
patching `time`.

`FileClock` lets a test (or a simulation) move the clock of a running daemon: `mta serve`
uses it when the environment names a file (`MTA_POLICY_CLOCK=/path`, `clock_from_env`).
Only policy time moves; the spool, shaping and logs keep real time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from mta.clock import Clock, ManualClock, SystemClock

__all__ = ["CLOCK_ENV", "Clock", "FileClock", "ManualClock", "SystemClock", "clock_from_env"]

log = logging.getLogger("mta.policy")

# The environment variable `mta serve` reads (test and simulation only).
CLOCK_ENV = "MTA_POLICY_CLOCK"


def parse_instant(text: str) -> float:
    """"1795000000" / "1795000000.5" (unix seconds) or an ISO 8601 time
    ("2026-11-22T23:59:30+01:00"; without an offset it is UTC, never the host's zone)."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    dt = datetime.fromisoformat(text)  # ValueError names the bad text
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


class FileClock:
    """Policy time read from a file holding one instant (see `parse_instant`).

    The time stands still at that instant until the file changes, like `ManualClock`: a
    test writes the instant it wants and every decision after that sees exactly it. The
    hot path costs one stat(): the file is re-read only when its inode, mtime or size
    changed (writers may replace it atomically with a rename). A file that becomes
    unreadable or unparsable keeps the last good instant, with one warning per change.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp = self._stat()
        self._now = 0.0
        # Fails fast at start-up: a daemon told to use a clock file must not guess the time.
        self._now = self._read(strict=True)

    def _stat(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)
        except OSError:
            return (0, 0, -1)
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self, strict: bool = False) -> float:
        try:
            return parse_instant(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            if strict:
                raise OSError(f"{CLOCK_ENV}={self.path}: not a readable unix time or ISO 8601 "
                              f"time: {e}") from None
            log.warning("%s=%s: %s; policy time stays at %s", CLOCK_ENV, self.path, e,
                        datetime.fromtimestamp(self._now, UTC).isoformat())
            return self._now

    def now(self) -> float:
        stamp = self._stat()
        if stamp != self._stamp:
            # Stamp first: a write racing this read is seen at the next call.
            self._stamp = stamp
            self._now = self._read()
        return self._now

    def set(self, when: float | datetime) -> None:
        """Write an instant to the file (how a test moves a running daemon's clock),
        atomically: a reader never sees half a number."""
        value = when.timestamp() if isinstance(when, datetime) else float(when)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(f"{value!r}\n", encoding="utf-8")
        os.replace(tmp, self.path)


def clock_from_env(environ: Mapping[str, str] = os.environ) -> Clock | None:
    """The clock `mta serve` gives policy: a `FileClock` when `MTA_POLICY_CLOCK` names a file,
    else None (the system clock). Says loudly that this is not for production."""
    path = environ.get(CLOCK_ENV)
    if not path:
        return None
    clock = FileClock(path)
    log.warning("%s=%s: POLICY TIME IS READ FROM A FILE (now %s). For tests and simulations "
                "only: quotas, credits, suspensions and the licence follow that file, not "
                "the real time.", CLOCK_ENV, path,
                datetime.fromtimestamp(clock.now(), UTC).isoformat())
    return clock
