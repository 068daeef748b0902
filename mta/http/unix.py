"""The local admin socket: an AF_UNIX stream socket that file permissions protect.

Postfix's postqueue works locally through file permissions; `[http] admin_socket` does the
same for `mta queue ...`: whoever may open the socket (mode 0660: the service user and its
group) is trusted, and needs no bearer token. This module owns making that socket
(`bind_admin_socket`, `release_admin_socket`) and connecting to it (`connect_unix`).

- Mode without a race: the socket is bound under a temporary name, chmod-ed to 0660, then
  renamed onto the final path, so no umask ever leaves it wider for an instant.
- A stale socket (the daemon was killed with -9) is replaced; a live one (another daemon
  answers on it) is refused, so a second daemon never steals the first one's socket.
- sun_path holds 107 bytes; longer paths (deep checkouts, test directories) are reached
  through the directory's /proc/self/fd entry (Linux).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections.abc import Iterator

from mta.config import Config

__all__ = ["ADMIN_SOCKET_MODE", "admin_socket_path", "bind_admin_socket", "connect_unix",
           "release_admin_socket"]

# Owner and group read/write: connect(2) on a Unix socket needs write permission.
ADMIN_SOCKET_MODE = 0o660
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 on Linux


def admin_socket_path(cfg: Config) -> str | None:
    """`[http] admin_socket` as daemon and client agree on it; None when turned off."""
    path = cfg.http.admin_socket
    if path is None:  # a Config() built in code, not loaded: the loader's default
        path = str(cfg.spool.dir / "admin.sock")
    return path or None


@contextlib.contextmanager
def _short(path: str) -> Iterator[str]:
    """A name for `path` that fits in sun_path, valid for the duration of the block."""
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def connect_unix(path: str, timeout: float | None = None) -> socket.socket:
    """A connected AF_UNIX stream socket; OSError (ENOENT, ECONNREFUSED, EACCES) if none."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        with _short(path) as name:
            sock.connect(name)
    except BaseException:
        sock.close()
        raise
    return sock


def _in_use(path: str) -> bool:
    """Whether a live process answers on the socket at `path` (False: absent or stale)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket; remove it or set "
                                    "[http] admin_socket elsewhere")
    try:
        connect_unix(path, timeout=1.0).close()
    except (ConnectionRefusedError, FileNotFoundError):
        return False  # a socket file nobody listens on: left by a kill -9
    except OSError:
        return True  # EACCES, a timeout: someone else's, and not ours to replace
    return True


def bind_admin_socket(path: str, backlog: int = 64) -> tuple[socket.socket, int]:
    """Bind and listen on `path` with mode 0660; returns the socket and its inode (for
    `release_admin_socket`). Raises OSError (EADDRINUSE) if a running daemon owns it."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    if _in_use(path):
        raise OSError(errno.EADDRINUSE, f"admin socket {path} is in use by a running daemon")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)  # our own pid's leftover: a previous life of this pid was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with _short(tmp) as name:
            sock.bind(name)
        os.chmod(tmp, ADMIN_SOCKET_MODE)  # before the socket is reachable by its name
        sock.listen(backlog)
        os.rename(tmp, path)  # atomic; replaces a stale socket file
        inode = os.lstat(path).st_ino
    except BaseException:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    sock.setblocking(False)
    return sock, inode


def release_admin_socket(path: str, inode: int) -> None:
    """Remove the socket file at stop, if it is still ours (a newer daemon may have
    replaced a socket it took for stale)."""
    with contextlib.suppress(OSError):
        if os.lstat(path).st_ino == inode:
            os.unlink(path)
