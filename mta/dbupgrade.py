"""Schema versions of mta's SQLite databases (the spool shards, policy.db): what is shared
by their migrations.

Each database keeps its schema version in `PRAGMA user_version` and its own list of
migrations (`mta/queue/schema.py`, `mta/policy/sqlite_schema.py`). This module owns what
both do around that list:

- a database newer than this mta knows is refused (`SchemaTooNewError`, one line naming the
  file, both versions and what to do; `mta serve` exits 78 with it), never misread;
- before an existing database is migrated, it is copied with SQLite's online backup API
  (which includes what is still in the WAL) to `NAME.vOLD-YYYYmmddTHHMMSSZ.bak` beside it,
  fsynced, and one line is logged: `PATH: schema v1 -> v2 (backup: BACKUP)`. If the copy
  cannot be written (disk full, ...), nothing is migrated (`SchemaBackupError`, an OSError:
  `mta serve` exits 71). A new database or a current one gets no backup and no line.

`write_backup` blocks: callers run it in a thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

__all__ = ["SchemaBackupError", "SchemaTooNewError", "backup_name", "write_backup"]

log = logging.getLogger("mta.upgrade")


class SchemaTooNewError(Exception):
    """The database was written by a newer mta: reading it could misread or damage it."""

    def __init__(self, path: Path | str, found: int, known: int) -> None:
        self.path, self.found, self.known = Path(path), found, known
        super().__init__(
            f"{path}: schema version {found} is newer than this mta knows ({known}); "
            f"upgrade mta, or restore the backup made by the upgrade "
            f"({Path(path).name}.vN-TIME.bak with N <= {known}, mta stopped)")


class SchemaBackupError(OSError):
    """The copy kept before a migration could not be written: the database is untouched."""


def backup_name(path: Path, version: int, now: float) -> Path:
    """`spool-00.sqlite.v2-20261204T210326Z.bak` beside `path`, for a copy at `version`."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return path.with_name(f"{path.name}.v{version}-{stamp}.bak")


def write_backup(path: Path, found: int, target: int, *, now: float) -> Path:
    """Copy the database at `path` (schema `found`) beside it before it is migrated to
    `target`; returns the copy's path. Raises SchemaBackupError, leaving no partial copy."""
    base = final = backup_name(path, found, now)
    n = 1
    while final.exists():  # a second attempt within the same second: keep the first copy
        n += 1
        final = base.with_name(f"{base.stem}-{n}.bak")
    part = final.with_name(final.name + ".part")
    try:
        src = sqlite3.connect(path)
        try:
            dst = sqlite3.connect(part)
            try:
                src.backup(dst)  # a consistent snapshot, WAL content included
            finally:
                dst.close()
        finally:
            src.close()
        fd = os.open(part, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(part, final)
        _fsync_dir(final.parent)
    except (OSError, sqlite3.Error) as e:
        for leftover in (part, part.with_name(part.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
        raise SchemaBackupError(
            f"{path}: cannot write the backup {final} before upgrading schema v{found} -> "
            f"v{target} ({e}); not upgrading: free space beside it and start again") from None
    log.warning("%s: schema v%d -> v%d (backup: %s)", path, found, target, final)
    return final


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
