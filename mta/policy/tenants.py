"""Tenants and sub-accounts: who sends, on which plan, with which limits.

Tenants come from `[tenants.NAME]` in config.toml and from the runtime store (created by
the admin API or CLI without a config reload). A sub-account names its `parent`; it has its
own counters and limits and is also bounded by every ancestor's (its mail counts against
them too). Limits resolve in layers: an active operator limit, else the tenant's own value,
else its plan's; 0 means unlimited.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["LIMIT_NAMES", "Limits", "Tenant", "egress_pool", "tenant_from_config",
           "tenant_from_json", "tenant_to_json"]

# The limits a plan, a tenant or an operator can set, each counted per calendar window.
# Messages are counted per accepted recipient (one copy sent = one message), like the
# licence and the credits: a message to 10 recipients uses 10 of the hourly limit.
LIMIT_NAMES = ("messages_per_hour", "messages_per_day", "messages_per_month",
               "unique_recipients_per_month")
LIMIT_PERIOD = {"messages_per_hour": "hour", "messages_per_day": "day",
                "messages_per_month": "month", "unique_recipients_per_month": "month"}
LIMIT_LABEL = {"messages_per_hour": "hourly message limit",
               "messages_per_day": "daily message limit",
               "messages_per_month": "monthly message limit",
               "unique_recipients_per_month": "monthly unique-recipient limit"}


@dataclass(frozen=True)
class Limits:
    """One layer of limits; None = not set at this layer, 0 = unlimited."""

    messages_per_hour: int | None = None
    messages_per_day: int | None = None
    messages_per_month: int | None = None
    unique_recipients_per_month: int | None = None


@dataclass(frozen=True)
class Tenant:
    name: str
    plan: str = ""
    parent: str = ""  # "" = top-level account
    status: str = "active"  # "active" | "suspended"
    pool: str = ""  # egress pool; "" = the parent's, else the default pool
    classes: tuple[str, ...] = ()  # message classes allowed; () = every class
    default_class: str = ""  # "" = [policy] default_class
    prepaid: bool = False  # needs credits; its own wallet (else the parent's, if prepaid)
    limits: Limits = field(default_factory=Limits)
    source: str = "config"  # "config" | "store"


def egress_pool(chain: Sequence[Tenant]) -> str:
    """The egress pool of a tenant chain (the tenant, then its ancestors, nearest first):
    the nearest that names one; "" = the default pool. Written on the envelope at
    acceptance (PolicyTxn.pool), and asked again for a message queued without one."""
    return next((t.pool for t in chain if t.pool), "")


def tenant_from_config(name: str, tc: object) -> Tenant:
    """Build from a config.TenantConfig (duck-typed: fields added over time)."""
    limits = Limits(**{k: getattr(tc, k, None) for k in LIMIT_NAMES})
    return Tenant(
        name=name,
        plan=getattr(tc, "plan", ""),
        parent=getattr(tc, "parent", ""),
        status=getattr(tc, "status", "active"),
        pool=getattr(tc, "pool", ""),
        classes=tuple(getattr(tc, "classes", ()) or ()),
        default_class=getattr(tc, "default_class", ""),
        prepaid=bool(getattr(tc, "prepaid", False)),
        limits=limits,
    )


def tenant_to_json(t: Tenant) -> str:
    d = dataclasses.asdict(t)
    d.pop("source")
    return json.dumps(d, sort_keys=True)


def tenant_from_json(text: str) -> Tenant:
    d = json.loads(text)
    d["limits"] = Limits(**d.get("limits", {}))
    d["classes"] = tuple(d.get("classes", ()))
    return Tenant(**d, source="store")
