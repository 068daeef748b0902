"""FileClock: policy time of a running daemon, moved by writing a file (MTA_POLICY_CLOCK)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import pytest

from mta.policy.clock import CLOCK_ENV, FileClock, clock_from_env


def test_reads_unix_seconds_and_iso_8601(tmp_path):
    path = tmp_path / "clock"
    path.write_text("1795000000.5\n")
    clock = FileClock(path)
    assert clock.now() == 1795000000.5
    path.write_text("2026-11-22T23:59:30+01:00")
    assert clock.now() == datetime(2026, 11, 22, 22, 59, 30, tzinfo=UTC).timestamp()
    path.write_text("2026-11-22T23:59:30")  # no offset: UTC, never the host's zone
    assert clock.now() == datetime(2026, 11, 22, 23, 59, 30, tzinfo=UTC).timestamp()


def test_time_stands_still_until_the_file_changes(tmp_path):
    path = tmp_path / "clock"
    path.write_text("1000")
    clock = FileClock(path)
    assert [clock.now() for _ in range(3)] == [1000.0] * 3
    clock.set(2000.25)  # an atomic replace, as a test moving a daemon's clock does
    assert clock.now() == 2000.25
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    assert clock.now() == datetime(2027, 1, 1, tzinfo=UTC).timestamp()


def test_a_bad_file_at_start_is_an_error_naming_the_variable(tmp_path):
    with pytest.raises(OSError, match=f"{CLOCK_ENV}=.*missing"):
        FileClock(tmp_path / "missing")
    (tmp_path / "bad").write_text("next tuesday")
    with pytest.raises(OSError, match="not a readable unix time or ISO 8601 time"):
        FileClock(tmp_path / "bad")


def test_a_file_broken_later_keeps_the_last_good_time_and_warns_once(tmp_path, caplog):
    path = tmp_path / "clock"
    path.write_text("1000")
    clock = FileClock(path)
    path.write_text("garbage!")
    with caplog.at_level(logging.WARNING, "mta.policy"):
        assert [clock.now() for _ in range(3)] == [1000.0] * 3
    assert len(caplog.records) == 1
    os.unlink(path)
    assert clock.now() == 1000.0


def test_from_env_only_when_set_and_says_so_loudly(tmp_path, caplog):
    assert clock_from_env({}) is None
    path = tmp_path / "clock"
    path.write_text("1795000000")
    with caplog.at_level(logging.WARNING, "mta.policy"):
        clock = clock_from_env({CLOCK_ENV: str(path)})
    assert isinstance(clock, FileClock) and clock.now() == 1795000000.0
    assert "POLICY TIME IS READ FROM A FILE" in caplog.text
    assert "tests and simulations only" in caplog.text.lower()
