"""Rate specs as operators write them: "100/s", "5000/h", "1,000/h burst 50"."""

import pytest

from mta.shaping.rate import Rate, parse_rate


@pytest.mark.parametrize(("spec", "limit", "period", "burst"), [
    ("100/s", 100, 1.0, 100),
    ("5000/h", 5000, 3600.0, 5000),
    ("100000/d", 100000, 86400.0, 100000),
    ("1,000/h", 1000, 3600.0, 1000),
    ("10/min", 10, 60.0, 10),
    ("3/hours", 3, 3600.0, 3),
    ("100/s burst 20", 100, 1.0, 20),
    (" 2,000 / m  burst 1 ", 2000, 60.0, 1),
])
def test_parse_accepts_operator_spellings(spec: str, limit: int, period: float,
                                          burst: int) -> None:
    assert parse_rate(spec) == Rate(limit, period, burst)


@pytest.mark.parametrize(("spec", "problem"), [
    ("100", "expected COUNT/PERIOD"),
    ("100/x", "unknown period 'x'"),
    ("0/s", "at least 1"),
    ("1,00/s", "'1,00' is not a whole number"),
    ("10/s burst 0", "burst must be at least 1"),
    ("10/s burst", "expected COUNT/PERIOD"),
    ("-5/s", "expected COUNT/PERIOD"),
])
def test_parse_errors_say_what_is_wrong(spec: str, problem: str) -> None:
    with pytest.raises(ValueError, match="invalid rate") as e:
        parse_rate(spec)
    assert problem in str(e.value)
    assert repr(spec) in str(e.value)


def test_parse_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="expected a rate"):
        parse_rate(100)


def test_key_folds_limit_period_and_burst() -> None:
    keys = {parse_rate(s).key for s in ("100/s", "100/m", "100/s burst 5", "60/s", "6000/m")}
    assert len(keys) == 5


def test_str_round_trips() -> None:
    for spec in ("100/s", "5000/h", "100/s burst 20", "7/d"):
        assert str(parse_rate(spec)) == spec
        assert parse_rate(str(parse_rate(spec))) == parse_rate(spec)
