"""Checks of [shaping.*] and [egress] that the config loader's types cannot express.

mta/config keeps rates as strings (config must not import shaping); `validate(cfg)` parses
them here, once at load, and checks names, dates and addresses. It returns one
`FILE: key: problem` line per error, like the loader, for `mta check-config` to print.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re

from mta.config import Config, ShapingRuleConfig
from mta.shaping.rate import parse_rate

__all__ = ["validate"]

_TLS = ("opportunistic", "required", "verify", "disabled")
_POSITIVE = ("connection_limit", "max_deliveries_per_connection",
             "max_recipients_per_transaction", "suspend_after")


def _q(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'


def _check_layer(layer: ShapingRuleConfig, key: str, sources: set[str],
                 add: list[tuple[str, str]], nested: bool) -> None:
    for name in ("max_message_rate", "max_connection_rate"):
        value = getattr(layer, name)
        if value:
            try:
                parse_rate(value)
            except ValueError as e:
                add.append((f"{key}.{name}", str(e)))
    for name in _POSITIVE:
        value = getattr(layer, name)
        if value is not None and value < 1:
            add.append((f"{key}.{name}", "must be at least 1"))
    if layer.tls and layer.tls not in _TLS:
        add.append((f"{key}.tls",
                    "must be \"opportunistic\", \"required\", \"verify\" or \"disabled\""))
    if layer.suspend_duration is not None and layer.suspend_duration <= 0:
        add.append((f"{key}.suspend_duration", "must be positive"))
    for src, sub in layer.source.items():
        skey = f"{key}.source.{_q(src)}"
        if nested:
            add.append((skey, "source tables cannot be nested inside a source table"))
            continue
        if src not in sources:
            add.append((skey, f"unknown egress source {src!r}"))
        _check_layer(sub, skey, sources, add, nested=True)


def validate(cfg: Config) -> list[str]:
    errs: list[tuple[str, str]] = []
    rl = cfg.rate_limits
    rates = [("rate_limits.global_message_rate", rl.global_message_rate),
             ("rate_limits.tenant_message_rate", rl.tenant_message_rate)]
    rates += [(f"rate_limits.provider_message_rate.{_q(k)}", v)
              for k, v in rl.provider_message_rate.items()]
    for key, value in rates:
        if value:
            try:
                parse_rate(value)
            except ValueError as e:
                errs.append((key, str(e)))
    names: list[str] = []
    for i, s in enumerate(cfg.egress.source):
        key = f"egress.source[{i}]"
        if not s.name:
            errs.append((f"{key}.name", "a source needs a name"))
        elif s.name in names:
            errs.append((f"{key}.name", f"duplicate source name {s.name!r}"))
        names.append(s.name)
        if s.address:
            try:
                ipaddress.ip_address(s.address)
            except ValueError:
                errs.append((f"{key}.address", f"not an IPv4 or IPv6 address: {s.address!r}"))
        for j, cap in enumerate(s.warmup):
            if cap < 0:
                errs.append((f"{key}.warmup[{j}]", "a daily cap cannot be negative"))
        if s.warmup and not s.warmup_start:
            errs.append((f"{key}.warmup_start", "required with warmup (\"YYYY-MM-DD\")"))
        if s.warmup_start:
            try:
                dt.date.fromisoformat(s.warmup_start)
            except ValueError:
                errs.append((f"{key}.warmup_start",
                             f"invalid date {s.warmup_start!r}: expected \"YYYY-MM-DD\""))
    sources = set(names) if names else {"default"}
    for pname, pool in cfg.egress.pool.items():
        key = f"egress.pool.{_q(pname)}.sources"
        if not pool.sources:
            errs.append((key, "a pool needs at least one source"))
        for src, weight in pool.sources.items():
            if src not in sources:
                errs.append((f"{key}.{_q(src)}", f"unknown egress source {src!r}"))
            if weight < 0:
                errs.append((f"{key}.{_q(src)}", "a weight cannot be negative"))
        if pool.sources and not any(w > 0 for w in pool.sources.values()):
            errs.append((key, "at least one weight must be positive"))
    for lname, layer in cfg.shaping.items():
        _check_layer(layer, f"shaping.{_q(lname)}", sources, errs, nested=False)
    return [f"{cfg.path}: {k}: {problem}" for k, problem in errs]
