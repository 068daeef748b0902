"""Whose thresholds apply: tenant > parent chain > plan > [reputation], key by key, with
the layer each value came from; the [reputation.plans/tenants] tables and their errors;
the guard's run-time overrides (policy store) and what they change."""

from __future__ import annotations

import pytest

from mta.config import parse_config
from mta.config.reputation import ReputationConfig, ThresholdsConfig
from mta.config.values import ConfigError
from mta.reputation import ReputationError, ReputationGuard
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


GUARD_TOML = """
[plans.bulk]
[tenants.acme]
plan = "bulk"
[tenants.kid]
parent = "acme"
[tenants.free]
[reputation]
windows = ["1h"]
min_sample = 10
[reputation.plans.bulk]
hard_bounce = [0.30, 0.50, 0.70, 0.90]
[reputation.tenants.free]
exempt = true
"""


async def _guard(tmp_path, text: str = GUARD_TOML):
    from mta.clock import ManualClock
    from mta.policy import PolicyAdmin, PolicyEngine
    from mta.policy.kv import kv_for

    cfg = parse_config(text, str(tmp_path / "c.toml"))
    engine = await PolicyEngine.open(cfg, tmp_path, clock=ManualClock(1_900_000_000))
    return engine, ReputationGuard(cfg.reputation, kv_for(engine.store), PolicyAdmin(engine))


def _outcomes(guard, tenant: str, ok: int, gone: int) -> None:
    for _ in range(ok):
        guard.on_event({"event": "delivered", "tenant": tenant})
    for _ in range(gone):
        guard.on_event({"event": "bounced", "tenant": tenant, "category": "invalid_recipient"})


async def test_guard_applies_each_tenants_thresholds_and_stored_overrides(tmp_path):
    engine, guard = await _guard(tmp_path)
    try:
        # 20% hard bounces each: the plan (30%) lets acme and its sub-account be; "free"
        # is exempt, and so is a sub-account of it made at run time.
        from mta.policy.tenants import Tenant

        await engine.tenants.create(Tenant("freekid", parent="free"))
        for t in ("acme", "kid", "free", "freekid"):
            _outcomes(guard, t, 8, 2)
        await guard.evaluate()
        assert {t: (await guard.show(t))["state"] for t in ("acme", "kid", "free")} == {
            "acme": "ok", "kid": "ok", "free": "ok"}
        assert (await guard.show("freekid"))["thresholds"]["exempt"] == {
            "value": True, "source": "[reputation.tenants.free]"}
        # Exempt tenants' outcomes are no longer even counted.
        _outcomes(guard, "free", 0, 5)
        assert "free" not in guard.counts.active
        # A run-time override on the parent: its sub-account follows at the next
        # evaluation, without new outcomes.
        r = await guard.set_thresholds("acme", {"hard_bounce": "0.05,0.10,0.15,0.5"})
        assert r["thresholds"]["hard_bounce"]["source"] == "run-time override of acme"
        await guard.evaluate()
        assert (await guard.show("acme"))["state"] == "suspended_class"
        # kid had no outcomes since, and is not above ok: it moves when it next has some.
        _outcomes(guard, "kid", 1, 0)
        await guard.evaluate()
        kid = await guard.show("kid")
        assert kid["state"] == "suspended_class" and kid["thresholds"]["hard_bounce"][
            "source"] == "run-time override of acme"
        # Bad values are refused, naming the key; nothing is stored.
        for changes, unset, text in [({"complaint": "0.5,0.1"}, [], "complaint"),
                                     ({"suspend_class": "promo"}, [], "promo"),
                                     ({"colour": "1"}, [], "colour"),
                                     ({}, ["colour"], "colour")]:
            with pytest.raises(ReputationError, match=text):
                await guard.set_thresholds("acme", changes, unset)
        with pytest.raises(ReputationError, match="unknown tenant"):
            await guard.set_thresholds("ghost", {"min_sample": 5})
        # Kept in the store: a new guard (a restart, another node) reads the same.
        again = ReputationGuard(guard.cfg, guard.kv, guard.admin)
        assert (await again.show("acme"))["thresholds"]["hard_bounce"]["value"] == [
            0.05, 0.10, 0.15, 0.5]
        await guard.set_thresholds("acme", {}, ["all"])
        assert (await again.show("acme"))["thresholds"]["hard_bounce"]["source"] == \
            "[reputation.plans.bulk]"
    finally:
        await engine.aclose()


async def test_run_time_overrides_are_shared_by_nodes_on_redis(tmp_path, redis_url):
    import redis

    url = redis_url.rsplit("/", 1)[0] + "/3"
    with redis.Redis.from_url(url, socket_timeout=5) as r:
        r.flushdb()
    text = GUARD_TOML + f'\n[cluster]\nredis_url = "{url}"\n'
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    engine_a, a = await _guard(tmp_path / "a", text)
    engine_b, b = await _guard(tmp_path / "b", text)
    try:
        _outcomes(a, "acme", 8, 2)
        await a.evaluate()
        assert (await a.show("acme"))["state"] == "ok"
        # Set on node B: B's next evaluation judges A's outcomes (shared counters) by it,
        # and both nodes show the state and where the value came from.
        await b.set_thresholds("acme", {"hard_bounce": [0.05, 0.1, 0.15, 0.5]})
        await b.evaluate()
        for g in (a, b):
            r = await g.show("acme")
            assert r["state"] == "suspended_class", r
            assert r["thresholds"]["hard_bounce"]["source"] == "run-time override of acme"
    finally:
        await engine_a.aclose()
        await engine_b.aclose()
