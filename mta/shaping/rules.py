"""Path rules: the frozen `PathConfig` of one (egress source, site), resolved from layers.

Layers, least to most specific (a later layer wins for each value it sets):

    default                    [shaping.default]
    default.source.SRC         [shaping.default.source.SRC]       every site, from SRC
    KEY                        [shaping.KEY] for each KEY that matches the path's site
    KEY.source.SRC             [shaping.KEY.source.SRC]

A KEY matches when it is the site name itself, the recipient domain, or a domain whose MX
rollup site (`key_sites[KEY]`, supplied by the caller from the resolver) is the path's site:
so `[shaping."gmail.com"]` also governs googlemail.com and every Google-hosted domain. When
several keys match, they apply in key order (sorted), which is deterministic; keep them
from disagreeing. Values no layer sets come from [delivery], then from
`ShapingRuleConfig.BUILTIN`. Each value remembers the layer it came from, for `explain`.

Pure: given the config and the site map, the same inputs always give the same PathConfig.
Resolve once per (source, site) when the path's pool is built, never per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mta.config import DeliveryConfig, ShapingRuleConfig
from mta.queue.names import ready_queue_name
from mta.shaping.rate import Rate, parse_rate

__all__ = ["RULE_FIELDS", "PathConfig", "matching_keys", "resolve_path"]

# The per-layer values, in the order `explain` lists them.
RULE_FIELDS = (
    "connection_limit", "max_message_rate", "max_connection_rate",
    "max_deliveries_per_connection", "max_recipients_per_transaction", "tls",
    "connect_timeout", "greeting_timeout", "command_timeout", "data_timeout",
    "suspend_after", "suspend_duration",
)
_RATES = ("max_message_rate", "max_connection_rate")


@dataclass(frozen=True, slots=True)
class PathConfig:
    source: str
    site: str
    connection_limit: int
    max_message_rate: Rate | None     # None: no rate limit
    max_connection_rate: Rate | None
    max_deliveries_per_connection: int
    max_recipients_per_transaction: int
    tls: str                          # opportunistic | required | verify | disabled
    connect_timeout: float
    greeting_timeout: float
    command_timeout: float
    data_timeout: float
    suspend_after: int
    suspend_duration: float
    # field name -> layer it came from ("default", "gmail.com.source.ip1", "delivery", ...)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    # "source->site": the path's name as the receiver sees it, keying its shaping state.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", ready_queue_name(self.source, self.site))

    def explain(self) -> dict[str, Any]:
        """Each effective value and the layer it came from, as plain JSON types."""
        out: dict[str, Any] = {}
        for name in RULE_FIELDS:
            value = getattr(self, name)
            out[name] = {"value": str(value) if isinstance(value, Rate) else value,
                         "from": self.origins.get(name, "unset")}
        return out


def _is_set(value: Any) -> bool:
    return value is not None and value != ""


def matching_keys(shaping: Mapping[str, ShapingRuleConfig], *, domain: str, site: str,
                  key_sites: Mapping[str, str]) -> list[str]:
    """The configured site keys (not "default") that apply to this domain/site, in order."""
    domain = domain.lower()
    return sorted(k for k in shaping if k != "default" and (
        k.lower() in (domain, site.lower()) or key_sites.get(k) == site))


def resolve_path(shaping: Mapping[str, ShapingRuleConfig], delivery: DeliveryConfig, *,
                 source: str, site: str, domain: str = "",
                 key_sites: Mapping[str, str] | None = None) -> PathConfig:
    """Resolve the layers for (source, site). `domain` is any recipient domain of the site
    (lets a key equal to that domain match before its rollup is known)."""
    layers: list[tuple[str, ShapingRuleConfig]] = []
    base = shaping.get("default")
    if base is not None:
        layers.append(("default", base))
        if source in base.source:
            layers.append((f"default.source.{source}", base.source[source]))
    for k in matching_keys(shaping, domain=domain, site=site, key_sites=key_sites or {}):
        layers.append((k, shaping[k]))
        if source in shaping[k].source:
            layers.append((f"{k}.source.{source}", shaping[k].source[source]))

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in RULE_FIELDS:
        for layer_name, layer in reversed(layers):
            v = getattr(layer, name)
            if _is_set(v):
                values[name], origins[name] = v, layer_name
                break
        else:
            if name in _RATES:
                values[name], origins[name] = None, "unset"
            elif hasattr(delivery, name):
                values[name], origins[name] = getattr(delivery, name), "delivery"
            else:
                values[name] = ShapingRuleConfig.BUILTIN[name]
                origins[name] = "builtin"
    for name in _RATES:
        if values[name] is not None:
            values[name] = parse_rate(values[name])  # checked by validate() at load
    return PathConfig(source=source, site=site, origins=MappingProxyType(origins), **values)

