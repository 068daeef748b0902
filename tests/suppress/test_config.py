"""[suppression]: defaults, durations, and a bad value named by its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.config import ConfigError
from mta.config.loader import parse_config


def _parse(text: str):
    return parse_config(text, "x.toml", Path("."), None)


def test_defaults_and_durations():
    s = _parse("").suppression
    assert (s.action, s.hard_bounce_expiry, s.hard_bounce_count) == ("reject", 30 * 86400, 1)
    s = _parse('[suppression]\naction = "drop"\nhard_bounce_window = "2h"\n').suppression
    assert (s.action, s.hard_bounce_window) == ("drop", 7200)


@pytest.mark.parametrize("line, word", [('action = "bounce"', "action"),
                                        ("hard_bounce_count = 0", "hard_bounce_count"),
                                        ("colour = 1", "colour")])
def test_bad_values_name_the_key(line, word):
    with pytest.raises(ConfigError) as e:
        _parse(f"[suppression]\n{line}\n")
    assert "suppression" in str(e.value) and word in str(e.value)
