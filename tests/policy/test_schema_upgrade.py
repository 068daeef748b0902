"""policy.db's schema version: 0.1.0's unversioned file is recorded as v1 and keeps its
state, an older one is backed up before it is migrated, a newer one is refused (by the
store, and by the real daemon with exit 78 and one line)."""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from mta.dbupgrade import SchemaBackupError, SchemaTooNewError, backup_name
from mta.policy import sqlite_schema
from mta.policy.sqlite_schema import SCHEMA_VERSION
from mta.policy.sqlite_store import SqliteStore
from tests.support.schema import assert_newer_refused, backups, user_version

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "spool-v2" / "policy.db"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
EXPIRES = 1_900_000_000.0


def _added_column(c: sqlite3.Connection) -> None:
    c.execute("ALTER TABLE lots ADD COLUMN upgrade_test TEXT NOT NULL DEFAULT 'x'")


def store_with_a_lot(path: Path) -> None:
    """A policy.db holding one credit lot, left as 0.1.0 left its files (no version)."""
    shutil.copyfile(FIXTURE, path)
    assert user_version(path) == 0
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO lots(tenant, amount, remaining, purchased, expires, paid, note) "
                  "VALUES('shop', 100, 60, ?, ?, 1, 'from 0.1.0')", (NOW - 86400, EXPIRES))
    c.close()


async def test_the_unversioned_policy_db_of_0_1_0_is_recorded_as_v1_without_a_backup(
        tmp_path, caplog):
    path = tmp_path / "policy.db"
    store_with_a_lot(path)
    caplog.set_level(logging.INFO, logger="mta")
    store = await SqliteStore.open(path, clock=lambda: NOW)
    try:
        [lot] = await store.lots("shop")
        assert (lot.amount, lot.remaining, lot.note) == (100, 60, "from 0.1.0")
    finally:
        await store.aclose()
    assert user_version(path) == SCHEMA_VERSION
    assert next(r.getMessage() for r in caplog.records if "schema" in r.getMessage()) == (
        f"{path}: no schema version recorded (mta 0.1.0); recorded as v1")
    assert bool(backups(tmp_path)) == (SCHEMA_VERSION > 1)


async def test_an_earlier_build_s_indexes_are_replaced_by_v1(tmp_path):
    path = tmp_path / "policy.db"
    shutil.copyfile(FIXTURE, path)
    with sqlite3.connect(path) as c:
        c.execute("DROP INDEX reservations_held")
        c.execute("CREATE INDEX reservations_msg ON reservations(msg_id, rcpt)")
    c.close()
    await (await SqliteStore.open(path)).aclose()
    with sqlite3.connect(path) as c:
        names = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    c.close()
    assert "reservations_held" in names and "reservations_msg" not in names


async def test_a_new_policy_db_is_v1_with_no_backup(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mta")
    await (await SqliteStore.open(tmp_path / "policy.db")).aclose()
    assert user_version(tmp_path / "policy.db") == SCHEMA_VERSION
    assert backups(tmp_path) == []
    assert not [r for r in caplog.records if "schema" in r.getMessage()]


async def test_an_older_policy_db_is_backed_up_then_migrated(tmp_path, monkeypatch, caplog):
    path = tmp_path / "policy.db"
    store_with_a_lot(path)
    await (await SqliteStore.open(path)).aclose()  # recorded as v1, migrated to today's
    for made in tmp_path.glob("*.bak"):  # that step's backup: this test is about the next
        made.unlink()
    caplog.clear()
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", [*sqlite_schema.MIGRATIONS, _added_column])
    target = len(sqlite_schema.MIGRATIONS)
    caplog.set_level(logging.INFO, logger="mta")
    store = await SqliteStore.open(path, clock=lambda: NOW)
    try:
        [lot] = await store.lots("shop")
        assert lot.remaining == 60
    finally:
        await store.aclose()
    backup = backup_name(path, SCHEMA_VERSION, NOW)
    assert backup.name == f"policy.db.v{SCHEMA_VERSION}-20270115T080000Z.bak"
    assert backups(tmp_path) == [backup.name]
    assert [r.getMessage() for r in caplog.records if "schema v" in r.getMessage()] == [
        f"{path}: schema v{SCHEMA_VERSION} -> v{target} (backup: {backup})"]
    assert user_version(path) == target
    with sqlite3.connect(backup) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert c.execute("SELECT remaining, note FROM lots").fetchall() == [(60, "from 0.1.0")]
    c.close()


async def test_no_migration_of_policy_db_without_its_backup(tmp_path, monkeypatch):
    path = tmp_path / "policy.db"
    await (await SqliteStore.open(path)).aclose()
    monkeypatch.setattr(sqlite_schema, "MIGRATIONS", [*sqlite_schema.MIGRATIONS, _added_column])
    os.symlink("/dev/full", f"{backup_name(path, SCHEMA_VERSION, NOW)}.part")  # disk full
    with pytest.raises(SchemaBackupError, match="not upgrading"):
        await SqliteStore.open(path, clock=lambda: NOW)
    assert user_version(path) == SCHEMA_VERSION
    assert backups(tmp_path) == []
    await (await SqliteStore.open(path, clock=lambda: NOW)).aclose()  # room again: upgrades
    assert user_version(path) == SCHEMA_VERSION + 1


async def test_a_newer_policy_db_is_refused_untouched(tmp_path):
    path = tmp_path / "policy.db"
    await (await SqliteStore.open(path)).aclose()
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    c.close()
    with pytest.raises(SchemaTooNewError) as err:
        await SqliteStore.open(path)
    assert str(err.value) == (
        f"{path}: schema version {SCHEMA_VERSION + 1} is newer than this mta knows "
        f"({SCHEMA_VERSION}); upgrade mta, or restore the backup made by the upgrade "
        f"(policy.db.vN-TIME.bak with N <= {SCHEMA_VERSION}, mta stopped)")
    assert user_version(path) == SCHEMA_VERSION + 1
    # The lock is released: the file is not left held by a half-open store.
    with sqlite3.connect(path) as c:
        c.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    c.close()
    await (await SqliteStore.open(path)).aclose()


async def test_a_newer_policy_db_stops_the_daemon_with_one_line_and_exit_78(tmp_path):
    path = tmp_path / "spool" / "policy.db"
    path.parent.mkdir()
    shutil.copyfile(FIXTURE, path)
    await assert_newer_refused(tmp_path, path, SCHEMA_VERSION)
