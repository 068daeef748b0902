"""The thresholds that apply to one tenant, as one pure function over the layers:

    run-time override of the tenant    (`mta policy reputation T --set`, policy store)
    [reputation.tenants.T]
    ... the same two for each parent, nearest first (a sub-account inherits)
    [reputation.plans.P]               P: the tenant's plan, else its nearest parent's
    [reputation]                       the global figures

Each key is taken from the first layer that sets it, so a tenant that sets only
`complaint` keeps its plan's `hard_bounce`. `[reputation] exempt = ["T"]` counts as
`exempt = true` in T's own config layer. Every value carries where it came from, for
`mta policy reputation T`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mta.config.reputation import OVERRIDE_KEYS, ReputationConfig, ThresholdsConfig

__all__ = ["Thresholds", "coerce", "override_from_json", "override_to_json", "thresholds_for"]


@dataclass(frozen=True)
class Thresholds:
    hard_bounce: tuple[float, ...]
    complaint: tuple[float, ...]
    spam_block: tuple[float, ...]
    min_sample: int
    limited_per_hour: int
    suspend_class: str
    exempt: bool
    # key -> the layer it came from: "[reputation]", "[reputation.plans.P]",
    # "[reputation.tenants.T]", "[reputation] exempt", "run-time override of T".
    source: dict[str, str] = field(default_factory=dict, compare=False)

    def public(self) -> dict[str, Any]:
        return {k: {"value": list(v) if isinstance(v := getattr(self, k), tuple) else v,
                    "source": self.source[k]} for k in OVERRIDE_KEYS}


def thresholds_for(cfg: ReputationConfig, tenant: str, plan: str = "",
                   parents: Sequence[str] = (),
                   runtime: Mapping[str, ThresholdsConfig] | None = None) -> Thresholds:
    """`parents`: the tenant's ancestors, nearest first; `plan`: the plan that applies (the
    tenant's, else its nearest parent's); `runtime`: run-time overrides by tenant name."""
    runtime = runtime or {}
    layers: list[tuple[str, dict[str, Any]]] = []
    for name in (tenant, *parents):
        if name in runtime:
            layers.append((f"run-time override of {name}", runtime[name].values()))
        if name in cfg.tenants:
            layers.append((f"[reputation.tenants.{name}]", cfg.tenants[name].values()))
        if name in cfg.exempt:
            layers.append(("[reputation] exempt", {"exempt": True}))
    if plan and plan in cfg.plans:
        layers.append((f"[reputation.plans.{plan}]", cfg.plans[plan].values()))
    layers.append(("[reputation]", {**{k: getattr(cfg, k) for k in OVERRIDE_KEYS
                                       if k != "exempt"}, "exempt": False}))
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for where, layer in layers:
        for k, v in layer.items():
            if k not in values:
                values[k] = tuple(v) if isinstance(v, list) else v
                source[k] = where
    return Thresholds(**values, source=source)


def override_to_json(o: ThresholdsConfig) -> str:
    return json.dumps(o.values(), sort_keys=True, separators=(",", ":"))


def override_from_json(text: str | None) -> ThresholdsConfig:
    """A stored override; keys this version does not know (or bad values) are dropped
    rather than failing every evaluation."""
    if not text:
        return ThresholdsConfig()
    try:
        d = json.loads(text)
        return ThresholdsConfig(**{k: v for k, v in d.items() if k in OVERRIDE_KEYS})
    except (ValueError, TypeError):
        return ThresholdsConfig()


def coerce(key: str, raw: Any) -> Any:
    """One override value from JSON, or from the CLI's text ("0.001,0.002,0.003,0.005",
    "50", "marketing", "true"); ValueError naming the key."""
    if key not in OVERRIDE_KEYS:
        raise ValueError(f"unknown key {key!r} (one of {', '.join(OVERRIDE_KEYS)})")
    if key in ("hard_bounce", "complaint", "spam_block"):
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, list):
            raise ValueError(f"{key}: expected four fractions like 0.001,0.002,0.003,0.005")
        try:
            out = [float(x) for x in items if not isinstance(x, bool)]
        except ValueError:
            raise ValueError(f"{key}: expected four fractions like "
                             "0.001,0.002,0.003,0.005") from None
        if len(out) != len(items):
            raise ValueError(f"{key}: expected numbers")
        return out
    if key in ("min_sample", "limited_per_hour"):
        if isinstance(raw, str) and raw.strip().isdigit():
            return int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ValueError(f"{key}: expected a whole number")
    if key == "exempt":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ValueError("exempt: expected true or false")
    if not isinstance(raw, str):
        raise ValueError(f"{key}: expected a string")
    return raw
