"""The ladder's rules without sockets: levels from figures, climbing at once, stepping
down one level per clean period, hand-set states that stay, min_sample."""

from __future__ import annotations

import pytest

from mta.clock import ManualClock
from mta.config.reputation import ReputationConfig
from mta.policy.kv import MemoryKV
from mta.reputation.counts import Counts, classify
from mta.reputation.ladder import Figures, State, decide, level_of

CFG = ReputationConfig(windows=[3600.0], min_sample=100, step_down_after=3600.0)


def test_each_metric_reaches_its_levels():
    assert level_of([Figures(3600, delivered=990, bounced=10, attempts=1000,
                             hard_bounce=10)], CFG)[0] == 0
    level, why = level_of([Figures(3600, delivered=940, bounced=60, attempts=1000,
                                   hard_bounce=60)], CFG)
    assert level == 2 and "hard bounce 6.00% over 1h >= 5.00%" in why
    # 0.35% complaints: marketing is suspended (0.3%), not all mail (0.5%).
    assert level_of([Figures(3600, delivered=2000, attempts=2000, complaint=7)], CFG)[0] == 3
    assert level_of([Figures(3600, delivered=700, attempts=1000, bounced=300,
                             spam_block=250)], CFG)[0] == 4


def test_too_small_a_sample_says_nothing():
    assert level_of([Figures(3600, delivered=50, bounced=49, attempts=99,
                             hard_bounce=49)], CFG) == (0, "")


def test_climb_at_once_then_step_down_one_level_per_clean_period():
    s = decide(State(), 4, "spam", 1000.0, CFG)
    assert s.name == "suspended" and s.reason == "spam" and s.history[-1]["by"] == "auto"
    assert decide(s, 0, "", 1000.0 + 3599, CFG) is s
    s = decide(s, 0, "", 1000.0 + 3600, CFG)
    assert s.name == "suspended_class"
    # Still at "limited" figures: stays above them, and the timer restarts each time.
    s = decide(s, 2, "x", 1000.0 + 7200, CFG)
    assert s.name == "limited"
    s2 = decide(s, 2, "x", 1000.0 + 20000, CFG)
    assert s2.name == "limited" and s2.last_breach == 1000.0 + 20000
    s3 = decide(s2, 0, "", 1000.0 + 20000 + 3600, CFG)
    assert s3.name == "warned"
    assert decide(decide(s3, 0, "", 30000 + 3600, CFG), 0, "", 40000, CFG).name == "ok"


def test_states_set_by_hand_stay_and_terminated_is_never_automatic():
    manual = State().moved(2, 0.0, "investigating", "operator", manual=True)
    assert decide(manual, 4, "spam", 10.0, CFG) is manual
    assert decide(manual, 0, "", 10 ** 9, CFG) is manual
    assert decide(State(), 5, "x", 0.0, CFG).name == "suspended"  # capped below terminated


def test_state_round_trips_and_bad_records_read_as_ok():
    s = State().moved(3, 5.0, "r", "auto")
    assert State.from_json(s.to_json()) == s
    assert State.from_json('{"level": 99}').name == "ok"
    assert State.from_json(None).name == "ok"


def test_outcomes_and_what_they_count():
    assert classify({"event": "delivered"}) == ("delivered", "attempts")
    assert classify({"event": "bounced", "category": "invalid_recipient"}) == (
        "bounced", "attempts", "hard_bounce")
    assert classify({"event": "deferred", "category": "spam_block"}) == (
        "attempts", "spam_block")
    assert classify({"event": "bounced", "category": "administrative"}) == ()
    assert classify({"event": "complained"}) == ("complaint",)
    assert classify({"event": "received"}) == ()


async def test_counts_roll_out_of_the_window_and_clear_starts_afresh():
    clock = ManualClock()
    counts = Counts(MemoryKV(), [3600.0])
    for _ in range(10):
        counts.add("shop", ("bounced", "attempts", "hard_bounce"), clock.now())
    counts.add("shop", ("delivered", "attempts"), clock.now())
    await counts.flush()
    (f,) = await counts.figures("shop", clock.now())
    assert (f.bounced, f.hard_bounce, f.delivered, f.sample) == (10, 10, 1, 11)
    assert counts.take_active() == {"shop"} and counts.take_active() == set()
    clock.advance(1800)
    (f,) = await counts.figures("shop", clock.now())
    assert f.sample == 11
    (f,) = await counts.figures("shop", clock.now(), since=clock.now())
    assert f.sample == 0
    clock.advance(3600)
    (f,) = await counts.figures("shop", clock.now())
    assert f.sample == 0


@pytest.mark.parametrize("bad", [{"windows": []}, {"hard_bounce": [0.1, 0.2]},
                                 {"complaint": [0.5, 0.1, 0.0, 0.6]}, {"min_sample": 0}])
def test_config_rules(bad):
    with pytest.raises(ValueError):
        ReputationConfig(**bad)
