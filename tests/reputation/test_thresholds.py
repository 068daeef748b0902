"""Whose thresholds apply: tenant > parent chain > plan > [reputation], key by key, with
the layer each value came from; the [reputation.plans/tenants] tables and their errors;
the guard's run-time overrides (policy store) and what they change."""

from __future__ import annotations

import pytest

from mta.config import parse_config
from mta.config.reputation import ReputationConfig, ThresholdsConfig
from mta.config.values import ConfigError
from mta.reputation.ladder import Figures, level_of
from mta.reputation.thresholds import coerce, override_from_json, override_to_json, thresholds_for

STRICT = [0.01, 0.02, 0.03, 0.04]
LOOSE = [0.1, 0.2, 0.3, 0.4]
MID = [0.05, 0.06, 0.07, 0.08]

CFG = ReputationConfig(
    min_sample=200,
    plans={"bulk": ThresholdsConfig(hard_bounce=LOOSE, min_sample=500, suspend_class="bulk")},
    tenants={"acme": ThresholdsConfig(hard_bounce=MID, limited_per_hour=10),
             "shop": ThresholdsConfig(hard_bounce=STRICT),
             "free": ThresholdsConfig(exempt=True)},
    exempt=["relay"])

G = "[reputation]"


@pytest.mark.parametrize("tenant, plan, parents, runtime, key, value, source", [
    # Nothing set anywhere: the global figures.
    ("nobody", "", [], {}, "hard_bounce", (0.02, 0.05, 0.0, 0.10), G),
    ("nobody", "", [], {}, "exempt", False, G),
    # The plan's, for what the plan sets; the rest stays global.
    ("x", "bulk", [], {}, "hard_bounce", tuple(LOOSE), "[reputation.plans.bulk]"),
    ("x", "bulk", [], {}, "min_sample", 500, "[reputation.plans.bulk]"),
    ("x", "bulk", [], {}, "complaint", (0.001, 0.002, 0.003, 0.005), G),
    ("x", "nosuchplan", [], {}, "hard_bounce", (0.02, 0.05, 0.0, 0.10), G),
    # The tenant's own beat its plan's, key by key.
    ("shop", "bulk", [], {}, "hard_bounce", tuple(STRICT), "[reputation.tenants.shop]"),
    ("shop", "bulk", [], {}, "min_sample", 500, "[reputation.plans.bulk]"),
    # A sub-account inherits its parent's over the plan's, unless it has its own.
    ("sub", "bulk", ["acme"], {}, "hard_bounce", tuple(MID), "[reputation.tenants.acme]"),
    ("sub", "bulk", ["acme"], {}, "limited_per_hour", 10, "[reputation.tenants.acme]"),
    ("sub", "bulk", ["acme"], {}, "suspend_class", "bulk", "[reputation.plans.bulk]"),
    ("shop", "", ["acme"], {}, "hard_bounce", tuple(STRICT), "[reputation.tenants.shop]"),
    # The nearest parent wins over a farther one.
    ("sub", "", ["shop", "acme"], {}, "hard_bounce", tuple(STRICT),
     "[reputation.tenants.shop]"),
    ("sub", "", ["shop", "acme"], {}, "limited_per_hour", 10, "[reputation.tenants.acme]"),
    # Run-time overrides beat the same tenant's config, and are inherited too.
    ("shop", "", [], {"shop": ThresholdsConfig(hard_bounce=LOOSE)}, "hard_bounce",
     tuple(LOOSE), "run-time override of shop"),
    ("sub", "", ["shop"], {"shop": ThresholdsConfig(min_sample=7)}, "min_sample", 7,
     "run-time override of shop"),
    # ... but a sub-account's own config beats its parent's run-time override.
    ("shop", "", ["acme"], {"acme": ThresholdsConfig(hard_bounce=LOOSE)}, "hard_bounce",
     tuple(STRICT), "[reputation.tenants.shop]"),
    # Exemption: a table's, the global list's, inherited, and undone by a child.
    ("free", "", [], {}, "exempt", True, "[reputation.tenants.free]"),
    ("relay", "", [], {}, "exempt", True, "[reputation] exempt"),
    ("kid", "", ["free"], {}, "exempt", True, "[reputation.tenants.free]"),
    ("kid", "", ["free"], {"kid": ThresholdsConfig(exempt=False)}, "exempt", False,
     "run-time override of kid"),
])
def test_precedence(tenant, plan, parents, runtime, key, value, source):
    th = thresholds_for(CFG, tenant, plan, parents, runtime)
    assert getattr(th, key) == value
    assert th.source[key] == source


def test_same_figures_different_levels():
    # 3% hard bounces over 1,000 outcomes: the strict tenant reaches suspended_class,
    # the global figures warn (2%), the plan's loose ones say nothing.
    f = [Figures(3600, delivered=970, bounced=30, attempts=1000, hard_bounce=30)]
    assert level_of(f, thresholds_for(CFG, "shop"))[0] == 3
    assert level_of(f, thresholds_for(CFG, "nobody"))[0] == 1
    assert level_of(f, thresholds_for(CFG, "x", "bulk"))[0] == 0
    # The plan's min_sample: 1,000 counts, 400 would not.
    small = [Figures(3600, delivered=100, bounced=300, attempts=400, hard_bounce=300)]
    assert level_of(small, thresholds_for(CFG, "x", "bulk"))[0] == 0
    assert level_of(small, thresholds_for(CFG, "nobody"))[0] == 4


def test_public_names_each_value_and_its_layer():
    pub = thresholds_for(CFG, "sub", "bulk", ["acme"]).public()
    assert pub["hard_bounce"] == {"value": MID, "source": "[reputation.tenants.acme]"}
    assert pub["exempt"] == {"value": False, "source": G}
    assert set(pub) == {"hard_bounce", "complaint", "spam_block", "min_sample",
                        "limited_per_hour", "suspend_class", "exempt"}


def test_override_text_and_json():
    assert coerce("complaint", "0.001,0.002,0.003,0.005") == [0.001, 0.002, 0.003, 0.005]
    assert coerce("complaint", [0, 0.1, 0.2, 0.3]) == [0.0, 0.1, 0.2, 0.3]
    assert coerce("min_sample", "50") == 50 and coerce("exempt", "true") is True
    for key, raw in [("complaint", "a,b"), ("min_sample", "1.5"), ("exempt", "maybe"),
                     ("nope", "1"), ("min_sample", True)]:
        with pytest.raises(ValueError, match=key):
            coerce(key, raw)
    o = ThresholdsConfig(complaint=STRICT, exempt=False)
    assert override_from_json(override_to_json(o)) == o
    assert override_from_json('{"complaint": [1]}') == ThresholdsConfig()  # bad: dropped
    assert override_from_json('{"future_key": 1, "min_sample": 3}').min_sample == 3


BASE = """
[plans.bulk]
[tenants.shop]
plan = "bulk"
"""


def _errors(text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(BASE + text, "c.toml")
    return e.value.errors


def test_config_tables_load():
    cfg = parse_config(BASE + """
[reputation.plans.bulk]
hard_bounce = [0.1, 0.2, 0.3, 0.4]
suspend_class = "marketing"
[reputation.tenants.shop]
min_sample = 50
exempt = false
""", "c.toml")
    assert cfg.reputation.plans["bulk"].hard_bounce == [0.1, 0.2, 0.3, 0.4]
    assert cfg.reputation.tenants["shop"].values() == {"min_sample": 50, "exempt": False}


@pytest.mark.parametrize("text, error", [
    ("[reputation.plans.bulk]\ncolour = 1\n", "c.toml: reputation.plans.bulk.colour: unknown key"),
    ("[reputation.tenants.shop]\nexempt = 1\n",
     "c.toml: reputation.tenants.shop.exempt: expected true or false, got an integer"),
    ("[reputation.tenants.shop]\ncomplaint = [0.1]\n",
     "c.toml: reputation.tenants.shop: complaint: must be four fractions"),
    ("[reputation.tenants.shop]\nmin_sample = 0\n",
     "c.toml: reputation.tenants.shop: min_sample: must be at least 1"),
    ("[reputation.plans.gold]\nmin_sample = 5\n",
     "c.toml: reputation.plans.gold: unknown plan 'gold' (not in [plans])"),
    ("[reputation.tenants.ghost]\nmin_sample = 5\n",
     "c.toml: reputation.tenants.ghost: unknown tenant 'ghost'"),
    ("[reputation.tenants.shop]\nsuspend_class = \"promo\"\n",
     "c.toml: reputation.tenants.shop.suspend_class: unknown message class 'promo'"),
])
def test_config_errors_name_the_key(text, error):
    assert any(e.startswith(error) for e in _errors(text)), _errors(text)
