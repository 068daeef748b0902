"""Upgrades of the spool: a spool made by the previous release (tests/fixtures/spool-v2, mta
0.1.0 with mail queued) is opened by this mta, backed up if its schema is older, and its
mail delivered; a newer spool is refused in one line; no backup, no upgrade."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from mta.dbupgrade import SchemaBackupError, backup_name
from mta.policy.sqlite_schema import SCHEMA_VERSION as POLICY_VERSION
from mta.queue import schema
from mta.queue.records import SpoolError
from mta.queue.schema import SCHEMA_VERSION
from mta.queue.spool import Spool
from tests.support.daemon import MtaProcess
from tests.support.schema import assert_newer_refused, backups, user_version

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "spool-v2"
ZONES = {"dest.test": "@ IN MX 10 mx.dest.test.\nmx IN A 127.0.0.2\n"}
FIXTURE_RCPTS = ["a@dest.test", "b@dest.test", "c@dest.test", "d@dest.test"]
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z, names the backups made here
STAMP = "20270115T080000Z"


FIXTURE_VERSION = user_version(FIXTURE / "spool-00.sqlite")


def copy_fixture(spool_dir: Path) -> Path:
    shutil.copytree(FIXTURE, spool_dir)
    return spool_dir / "spool-00.sqlite"


async def _added_column(db: aiosqlite.Connection) -> None:
    await db.execute("ALTER TABLE messages ADD COLUMN upgrade_test TEXT NOT NULL DEFAULT 'x'")


# --- the previous release's spool, through the real daemon -------------------------------

async def test_a_spool_of_the_previous_release_is_upgraded_and_its_mail_delivered(
        tmp_path, dns_server_factory, mx_factory):
    mx = await mx_factory("127.0.0.2")
    dns = dns_server_factory(ZONES)
    db = copy_fixture(tmp_path / "spool")
    mta = MtaProcess(tmp_path, dns=dns.nameserver, delivery_port=mx_factory.port,
                     delivery_extra='retry = ["1s"]\nconnect_timeout = "3s"')
    await asyncio.to_thread(mta.start)
    try:
        received = await mx.wait_for_messages(3, timeout=30)
        assert sorted(r for m in received for r in m.rcpt_tos) == FIXTURE_RCPTS
        assert sorted(m.body.split(b"Subject: ")[1].split(b"\r\n")[0] for m in received) == [
            b"upgrade-1", b"upgrade-2", b"upgrade-3"]
        for _ in range(150):  # the events are written just after the MX's 250
            delivered = [e for e in mta.events() if e["event"] == "delivered"]
            if len(delivered) >= 4:
                break
            await asyncio.sleep(0.1)
        assert sorted(e["recipient"] for e in delivered) == FIXTURE_RCPTS
        assert {m["state"] for m in await asyncio.to_thread(mta.queue_list)} == {"done"}
    finally:
        assert await asyncio.to_thread(mta.terminate) == 0
    assert user_version(db) == SCHEMA_VERSION
    # A real upgrade (the fixture is older than this mta) keeps a copy and says so; a spool
    # already at this mta's version is opened as it is.
    made = backups(db.parent)
    if FIXTURE_VERSION < SCHEMA_VERSION:
        [name] = [n for n in made if n.startswith("spool-00.sqlite.")]
        assert name.startswith(f"spool-00.sqlite.v{FIXTURE_VERSION}-") and name.endswith(".bak")
        assert user_version(db.parent / name) == FIXTURE_VERSION
        assert (f"{db}: schema v{FIXTURE_VERSION} -> v{SCHEMA_VERSION} "
                f"(backup: {db.parent / name})") in mta.stderr
    else:
        assert not [n for n in made if n.startswith("spool-00.sqlite.")]
        assert f"{db}: schema v" not in mta.stderr
    # policy.db: 0.1.0 recorded no version; its tables are v1's.
    policy_db = db.parent / "policy.db"
    assert user_version(policy_db) == POLICY_VERSION
    assert f"{policy_db}: no schema version recorded (mta 0.1.0); recorded as v1" in mta.stderr
    assert bool([n for n in made if n.startswith("policy.db.v1-")]) == (POLICY_VERSION > 1)


async def test_a_newer_spool_stops_the_daemon_with_one_line_and_exit_78(tmp_path):
    db = copy_fixture(tmp_path / "spool")
    mta = await assert_newer_refused(tmp_path, db, SCHEMA_VERSION)
    assert mta.proc is not None and mta.proc.returncode == 78
    assert backups(db.parent) == []


# --- the mechanism, with a migration appended for the test -------------------------------

async def test_an_upgrade_backs_up_the_old_spool_logs_one_line_and_keeps_the_mail(
        tmp_path, monkeypatch, caplog):
    db = copy_fixture(tmp_path / "spool")
    with sqlite3.connect(db) as c:
        before = c.execute("SELECT id, state FROM messages ORDER BY id").fetchall()
    c.close()
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _added_column])
    target = len(schema.MIGRATIONS)
    caplog.set_level(logging.INFO, logger="mta")
    async with await Spool.open(db.parent, clock=lambda: NOW) as spool:
        pending = [(r.msg_id, r.index) async for rows in spool.iter_pending() for r in rows]
        assert sorted({m for m, _ in pending}) == [m for m, _ in before]
        assert len(pending) == 4
        assert [await spool.read_body(m) is not None for m, _ in before] == [True] * 3
    backup = db.parent / f"spool-00.sqlite.v{FIXTURE_VERSION}-{STAMP}.bak"
    assert backup == backup_name(db, FIXTURE_VERSION, NOW)
    assert backups(db.parent) == [backup.name]
    assert [r.getMessage() for r in caplog.records if "schema v" in r.getMessage()] == [
        f"{db}: schema v{FIXTURE_VERSION} -> v{target} (backup: {backup})"]
    assert [r.levelname for r in caplog.records if "schema v" in r.getMessage()] == ["WARNING"]
    assert user_version(db) == target
    with sqlite3.connect(db) as c:
        assert c.execute("SELECT DISTINCT upgrade_test FROM messages").fetchall() == [("x",)]
    c.close()
    # The backup is the spool as it was: its version, its mail, none of the new column.
    with sqlite3.connect(backup) as c:
        assert c.execute("PRAGMA user_version").fetchone()[0] == FIXTURE_VERSION
        assert c.execute("SELECT id, state FROM messages ORDER BY id").fetchall() == before
        assert "upgrade_test" not in [r[1] for r in c.execute("PRAGMA table_info(messages)")]
    c.close()
    # Opened again at its new version: no second backup, no line.
    caplog.clear()
    async with await Spool.open(db.parent, clock=lambda: NOW + 60):
        pass
    assert backups(db.parent) == [backup.name]
    assert not [r for r in caplog.records if "schema v" in r.getMessage()]


async def test_the_backup_holds_what_is_still_in_the_wal(tmp_path, monkeypatch):
    async with await Spool.open(tmp_path):
        pass
    # A spool killed before it folded its WAL: the last messages are only in the WAL.
    db = tmp_path / "spool-00.sqlite"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA wal_autocheckpoint=0")
    c.execute("INSERT INTO bodies(id, body) VALUES ('only-in-wal', x'00')")
    wal = tmp_path / "spool-00.sqlite-wal"
    assert wal.stat().st_size > 0
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _added_column])
    async with await Spool.open(tmp_path, clock=lambda: NOW):
        pass
    c.close()
    with sqlite3.connect(backup_name(db, SCHEMA_VERSION, NOW)) as b:
        assert b.execute("SELECT id FROM bodies").fetchall() == [("only-in-wal",)]
    b.close()


async def test_no_backup_no_upgrade_when_the_backup_cannot_be_written(
        tmp_path, monkeypatch, caplog):
    db = copy_fixture(tmp_path / "spool")
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, _added_column])
    # The backup is written to NAME.part first: make that the full disk /dev/full is.
    os.symlink("/dev/full", f"{backup_name(db, FIXTURE_VERSION, NOW)}.part")
    with pytest.raises(SchemaBackupError) as err:
        await Spool.open(db.parent, clock=lambda: NOW)
    assert isinstance(err.value, OSError)  # mta serve: "cannot start: ...", exit 71
    assert str(err.value).startswith(
        f"{db}: cannot write the backup {backup_name(db, FIXTURE_VERSION, NOW)} before "
        f"upgrading schema v{FIXTURE_VERSION} -> v{len(schema.MIGRATIONS)} (")
    assert "full" in str(err.value) and "not upgrading" in str(err.value)
    assert user_version(db) == FIXTURE_VERSION  # not migrated
    assert backups(db.parent) == []  # no partial copy left
    assert not [r for r in caplog.records if "schema v" in r.getMessage()]
    # Once there is room, the next start upgrades.
    async with await Spool.open(db.parent, clock=lambda: NOW):
        pass
    assert user_version(db) == len(schema.MIGRATIONS)
    assert backups(db.parent) == [backup_name(db, FIXTURE_VERSION, NOW).name]


async def test_a_new_spool_gets_no_backup_and_no_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="mta")
    async with await Spool.open(tmp_path):
        pass
    assert user_version(tmp_path / "spool-00.sqlite") == SCHEMA_VERSION
    assert backups(tmp_path) == []
    assert not [r for r in caplog.records if "schema v" in r.getMessage()]


async def test_a_spool_newer_than_the_migrations_is_refused_untouched(tmp_path, monkeypatch):
    db = copy_fixture(tmp_path / "spool")
    monkeypatch.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:FIXTURE_VERSION - 1])
    with pytest.raises(SpoolError, match=f"schema version {FIXTURE_VERSION} is newer than "
                                         f"this mta knows \\({FIXTURE_VERSION - 1}\\)"):
        await Spool.open(db.parent)
    assert user_version(db) == FIXTURE_VERSION
    assert backups(db.parent) == []
