"""[retention]: rotated events files and failed webhook batches past their age are removed;
the current events file, younger files and batches still being retried are not."""

from __future__ import annotations

import os
import time

import pytest

from mta.config import ConfigError, parse_config
from mta.observe.rotate import prune_older
from mta.webhooks.outbox import Outbox


def test_rotated_events_files_older_than_the_age_go(tmp_path):
    live = tmp_path / "events.jsonl"
    live.write_text("{}\n")
    old = tmp_path / "events.jsonl-20260101T000000.gz"
    young = tmp_path / "events.jsonl-20261201T000000.gz"
    for p in (old, young):
        p.write_bytes(b"x")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(live, (week_ago, week_ago))  # old too, but the current file is never removed
    assert prune_older(live, time.time() - 86400) == 1
    assert not old.exists() and young.exists() and live.exists()
    assert prune_older(tmp_path / "absent" / "events.jsonl", time.time()) == 0


async def test_failed_webhook_batches_past_their_age_go(tmp_path):
    box = await Outbox.open(tmp_path / "webhooks-00.sqlite")
    try:
        now = time.time()
        await box.add([("ep", "msg_old", b"{}", 3, now - 40 * 86400),
                       ("ep", "msg_new", b"{}", 2, now - 86400),
                       ("ep", "msg_pending", b"{}", 1, now - 40 * 86400)])
        batches = await box.next("ep")
        await box.fail_older("ep", now - 10)  # every batch of a failing endpoint
        await box.replay("ep", ["msg_pending"])  # this one is being retried again
        assert await box.purge_failed(now - 30 * 86400) == 1
        assert {b.webhook_id for b in await box.failed("ep")} == {"msg_new"}
        assert {b.webhook_id for b in await box.next("ep")} == {"msg_pending"}
        assert len(batches) == 3
    finally:
        await box.close()


def test_retention_config():
    cfg = parse_config('[retention]\nmetadata = "60d"\nevents = "30d"\n', "c.toml")
    assert cfg.retention.metadata == 60 * 86400 and cfg.retention.events == 30 * 86400
    with pytest.raises(ConfigError):
        parse_config('[retention]\nevents = "-1d"\n', "c.toml")
