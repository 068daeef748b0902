"""The daemon's own log lines in each `[log] format`, read from the real daemon's stderr:
journal lines carry the sd-daemon priority and no time, JSON lines parse, and "auto"
follows $JOURNAL_STREAM the way systemd.exec(5) describes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import time

import pytest

from mta.observe.logs import JournalFormatter, JsonFormatter
from tests.support.daemon import MtaProcess

TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")


def _with_format(mta: MtaProcess, fmt: str | None) -> MtaProcess:
    if fmt is not None:
        text = mta.config_path.read_text().replace("[log]\n", f'[log]\nformat = "{fmt}"\n')
        mta.config_path.write_text(text)
    return mta


def _wait_for(mta: MtaProcess, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while needle not in mta.stderr:
        assert time.monotonic() < deadline, f"no {needle!r} in:\n{mta.stderr}"
        time.sleep(0.05)
    return mta.stderr


def _run_with_warning_and_error(tmp_path, fmt: str | None, env: dict[str, str] | None = None
                                ) -> list[str]:
    """Start, log a warning (the policy clock), an info (ready), an error (a refused
    reload); stop. The daemon's stderr, as lines."""
    clock = tmp_path / "clock"
    clock.write_text("2030-01-01T00:00:00Z\n")
    mta = _with_format(MtaProcess(tmp_path), fmt)
    mta.env.update({"MTA_POLICY_CLOCK": str(clock), **(env or {})})
    try:
        mta.start()
        _wait_for(mta, "mta ready")
        good = mta.config_path.read_text()
        mta.config_path.write_text(good + "\n[nosuch]\nx = 1\n")
        assert mta.proc is not None
        mta.proc.send_signal(signal.SIGHUP)
        _wait_for(mta, "reload refused")
        assert mta.terminate() == 0
    finally:
        mta.kill()
    return mta.stderr.splitlines()


def test_journal_lines_carry_the_priority_and_no_time(tmp_path):
    lines = _run_with_warning_and_error(tmp_path, "journal")
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines
    assert not any(TIMESTAMP.match(line[3:]) for line in lines), lines  # journald adds it
    assert any(line.startswith("<6>mta: mta ready (pid ") for line in lines), lines
    assert any(line.startswith("<4>mta.policy: MTA_POLICY_CLOCK=") for line in lines)
    assert any(line.startswith("<3>mta: reload refused: ") and "nosuch: unknown key" in line
               for line in lines), lines


def test_json_lines_are_one_object_each(tmp_path):
    lines = _run_with_warning_and_error(tmp_path, "json")
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(set(r) == {"time", "level", "logger", "message", "exc"} for r in records)
    assert all(abs(r["time"] - time.time()) < 120 for r in records)
    levels = {(r["level"], r["logger"], r["message"].split(":")[0]) for r in records}
    assert ("warning", "mta.policy", "MTA_POLICY_CLOCK=" + str(tmp_path / "clock")
            ) in levels
    assert any(r["level"] == "info" and r["message"].startswith("mta ready") for r in records)
    assert any(r["level"] == "error" and r["message"].startswith("reload refused: ")
               for r in records)


def test_text_is_the_default_off_the_journal(tmp_path):
    lines = _run_with_warning_and_error(tmp_path, None)
    assert all(TIMESTAMP.match(line) for line in lines), lines
    assert any(re.search(r" INFO mta: mta ready", line) for line in lines)


def test_auto_is_journal_when_stderr_is_the_journal_stream(tmp_path):
    # MtaProcess appends stderr to this file: its (st_dev, st_ino) is what systemd would
    # have put in $JOURNAL_STREAM for a stream it connected.
    stderr = tmp_path / "mta.stderr"
    stderr.touch()
    st = os.stat(stderr)
    lines = _run_with_warning_and_error(
        tmp_path, "auto", {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), lines


def test_auto_is_text_when_journal_stream_names_another_file(tmp_path):
    # Under systemd with stderr redirected (2>file): $JOURNAL_STREAM is inherited but is
    # not this stderr, so no priority prefixes end up in the file.
    other = os.stat(tmp_path)
    lines = _run_with_warning_and_error(
        tmp_path, "auto", {"JOURNAL_STREAM": f"{other.st_dev}:{other.st_ino}"})
    assert all(TIMESTAMP.match(line) for line in lines), lines


def _log_traceback(formatter: logging.Formatter) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    logger = logging.getLogger("mta.test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            {}["missing"]
        except KeyError:
            logger.exception("lookup failed\nsecond line")
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_journal_traceback_keeps_its_priority_on_every_line():
    # journald splits a stream at newlines; sd-daemon(3): prefix every line, or the
    # continuation lines are logged at the default priority (info).
    lines = _log_traceback(JournalFormatter()).splitlines()
    assert lines[0] == "<3>mta.test.logs: lookup failed"
    assert lines[1] == "<3>second line"
    assert "<3>Traceback (most recent call last):" in lines
    assert lines[-1] == "<3>KeyError: 'missing'"
    assert all(line.startswith("<3>") for line in lines)


@pytest.mark.parametrize("formatter", [JsonFormatter()])
def test_a_json_traceback_is_one_line(formatter):
    text = _log_traceback(formatter)
    assert text.count("\n") == 1
    record = json.loads(text)
    assert record["message"] == "lookup failed\nsecond line"
    assert record["level"] == "error"
    assert record["exc"].startswith("Traceback (most recent call last):")
    assert record["exc"].endswith("KeyError: 'missing'")
