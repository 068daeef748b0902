"""Schema-version helpers shared by the spool's and policy.db's upgrade tests."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from tests.support.daemon import MtaProcess

__all__ = ["assert_newer_refused", "backups", "user_version"]


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA user_version").fetchone()[0]
    finally:
        db.close()


def backups(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.bak*"))


async def assert_newer_refused(workdir: Path, db: Path, known: int) -> MtaProcess:
    """Mark `db` as written by a newer mta (version known + 1), start the real daemon in
    `workdir`, and check it refuses with exit 78 and one ERROR line naming the file, the
    versions and the backup to restore; `db` is left untouched."""
    with sqlite3.connect(db) as c:
        c.execute(f"PRAGMA user_version = {known + 1}")
    c.close()
    mta = MtaProcess(workdir)
    with pytest.raises(RuntimeError, match="exited with 78"):
        await asyncio.to_thread(mta.start)
    errors = [line for line in mta.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, mta.stderr
    assert errors[0].endswith(
        f"cannot start: {db}: schema version {known + 1} is newer than this mta "
        f"knows ({known}); upgrade mta, or restore the backup made by the upgrade "
        f"({db.name}.vN-TIME.bak with N <= {known}, mta stopped)")
    assert "Traceback" not in mta.stderr
    assert user_version(db) == known + 1  # untouched
    return mta
