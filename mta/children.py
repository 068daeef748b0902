"""Child processes that must not outlive `mta serve`: `die_with_parent(os.getpid())` as
Popen's preexec_fn.

systemd stops a unit by its whole cgroup, but a supervisor killed outside systemd (kill -9,
a test's teardown, a crash) would leave its workers serving the same spool shards and the
same SO_REUSEPORT listeners as the next `mta serve`. Linux's PR_SET_PDEATHSIG has the
kernel send each child SIGTERM (a worker then drains and exits as on any SIGTERM) the
moment the process that started it dies.
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

__all__ = ["die_with_parent"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn for children of process `parent` (the caller's os.getpid())."""

    def in_child() -> None:  # between fork and exec
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):
            return  # not Linux: the supervisor's own stop is all there is
        if os.getppid() != parent:  # it died before the kernel was told: go now
            os._exit(0)

    return in_child
