"""This process's place in its node: who owns its policy reservations, which events file
it writes, and the byte that tells the supervisor (`[server] workers` > 1) it is up.
"""

from __future__ import annotations

import contextlib
import os

from mta.config import Config
from mta.supervisor import READY_FD_ENV

__all__ = ["events_path", "node_owner", "tell_supervisor"]


def node_owner(spool_dir: str | os.PathLike[str], shard: int) -> str:
    """Who owns this process's policy reservations: "<node id>/<shard>". Nodes of a cluster
    share one policy store, and a restarted node must reconcile its own reservations and no
    one else's; the spool directory is what stays the same across restarts, so the node id
    is made once, at random, in `spool_dir/node-id` and kept there."""
    path = os.path.join(spool_dir, "node-id")
    if not os.path.exists(path):
        os.makedirs(spool_dir, exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(os.urandom(8).hex() + "\n")
            f.flush()
            os.fsync(f.fileno())  # a node id lost in a crash would orphan its reservations
        try:
            os.link(tmp, path)  # atomic and exclusive: workers starting together agree
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        fd = os.open(spool_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    with open(path) as f:
        return f"{f.read().strip()}/{shard}"


def events_path(cfg: Config, shard: int) -> str | None:
    """The events log of a worker: `[log] events` for worker 0, with "-NN" before the
    suffix for the others (one writer per file: lines never interleave, rotation stays
    each file's own)."""
    path = cfg.log.events
    if not path or shard == 0:
        return path or None
    root, dot, ext = path.rpartition(".")
    return f"{root}-{shard:02d}.{ext}" if dot and "/" not in ext else f"{path}-{shard:02d}"


def tell_supervisor() -> None:
    """Under mta.supervisor: one byte on the pipe it gave, once every listener is up."""
    fd = os.environ.pop(READY_FD_ENV, None)
    if fd is None:
        return
    with contextlib.suppress(OSError, ValueError):
        os.write(int(fd), b"R")
        os.close(int(fd))
