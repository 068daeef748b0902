"""CPU and memory of a process tree from /proc, for comparing one mta process with
Postfix's master and its many short-lived children on equal terms.

CPU is utime+stime+cutime+cstime summed over the tree: a child that exited and was reaped
is still counted, in its parent's cutime/cstime. Memory is the sum of PSS over the tree,
sampled by `Sampler` in a thread (peak of the sum), since Postfix's children come and go.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

_TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree(root: int) -> list[int]:
    """`root` and all its descendants alive now."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def tree_cpu(root: int) -> float:
    """CPU seconds (user+system, including reaped children) of the tree under `root`."""
    total = 0
    for pid in tree(root):
        st = _stat(pid)
        if st is not None:
            total += sum(int(x) for x in st[11:15])  # utime stime cutime cstime
    return total / _TICK


def tree_rss(root: int) -> int:
    """Proportional resident bytes (PSS) of the tree under `root` now: each shared page
    counts once across the tree, so 40 Postfix processes sharing libc are not 40 libcs.
    For one process (mta) PSS is its RSS less its share of the pages shared with others."""
    total = 0
    for pid in tree(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


class Sampler:
    """Samples the tree's RSS and CPU every `interval` seconds in a thread; `peak_rss` and
    `series` ([(unix time, cpu seconds, rss bytes)]) when stopped."""

    def __init__(self, root_fn, interval: float = 0.5) -> None:  # type: ignore[no-untyped-def]
        self.root_fn = root_fn  # a callable: the root pid can change (restart)
        self.interval = interval
        self.peak_rss = 0
        self.series: list[tuple[float, float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            root = self.root_fn()
            if root:
                rss = tree_rss(root)
                self.peak_rss = max(self.peak_rss, rss)
                self.series.append((time.time(), tree_cpu(root), rss))
            if self._stop.wait(self.interval):
                return


def wait_idle(root: int, *, cpu_per_second: float = 0.05, timeout: float = 120.0) -> float:
    """Wait until the tree uses less than `cpu_per_second` over one second (done with its
    backlog); returns the seconds waited (at most `timeout`)."""
    t0 = time.monotonic()
    last = tree_cpu(root)
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = tree_cpu(root)
        if now - last < cpu_per_second:
            break
        last = now
    return time.monotonic() - t0
