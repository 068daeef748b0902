"""Child processes that must not outlive `mta serve`: `die_with_parent(os.getpid())` as
Popen's preexec_fn, or `tie_to_parent` called by the child itself (mta.pipeworker's
workers, started by a daemon that has threads, where a preexec_fn is unsafe).

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

__all__ = ["die_with_parent", "tie_to_parent"]

_PR_SET_PDEATHSIG = 1


def tie_to_parent(parent: int, sig: int) -> bool:
    """Have the kernel send this process `sig` when `parent` dies (Linux; elsewhere the
    parent's own stop is all there is). False if `parent` is gone already: it died
    before the kernel was told, and the caller should exit now."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    return os.getppid() == parent


def die_with_parent(parent: int) -> Callable[[], None]:
    """A preexec_fn for children of process `parent` (the caller's os.getpid())."""

    def in_child() -> None:  # between fork and exec
        if not tie_to_parent(parent, signal.SIGTERM):
            os._exit(0)

    return in_child
