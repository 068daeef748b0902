"""[signing] workers: the default, 0 (no pool) and a bad value named by its key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mta.config import ConfigError, parse_config


def test_signing_workers(tmp_path: Path) -> None:
    assert parse_config("", "t.toml", tmp_path).signing.workers == (os.cpu_count() or 1)
    assert parse_config("[signing]\nworkers = 0\n", "t.toml", tmp_path).signing.workers == 0
    with pytest.raises(ConfigError, match="signing"):
        parse_config("[signing]\nworkers = -1\n", "t.toml", tmp_path)
