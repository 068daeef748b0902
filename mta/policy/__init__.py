"""Policy: tenants and sub-accounts, volume licence, prepaid credits, quotas, sending limits,
suspensions, duplicate suppression, message classes.

Ingress asks `PolicyEngine` one question per SMTP stage (a `Reply` to refuse, `None` to go
on); delivery reports outcomes; `PolicyAdmin` holds the operator actions behind
`mta policy ...`; `licence` signs and verifies licence files for `mta licence ...`.
"""

from mta.policy.admin import CreditSummary, PolicyAdmin, Usage, format_history
from mta.policy.clock import Clock, FileClock, ManualClock, SystemClock, clock_from_env
from mta.policy.directory import PolicyError
from mta.policy.engine import OUTCOMES, PolicyEngine, PolicyTxn
from mta.policy.licence import (
    Licence,
    LicenceError,
    generate_licence_keypair,
    issue_licence,
    load_licence,
    show_licence,
)
from mta.policy.licence_gate import LicenceStatus
from mta.policy.redis_store import RedisStore
from mta.policy.sqlite_store import SqliteStore
from mta.policy.store import LedgerEntry, Lot, OperatorLimit, PolicyStore, Suspension
from mta.policy.tenants import LIMIT_NAMES, Limits, Tenant, egress_pool

__all__ = [
    "LIMIT_NAMES",
    "OUTCOMES",
    "Clock",
    "CreditSummary",
    "FileClock",
    "LedgerEntry",
    "Licence",
    "LicenceError",
    "LicenceStatus",
    "Limits",
    "Lot",
    "ManualClock",
    "OperatorLimit",
    "PolicyAdmin",
    "PolicyEngine",
    "PolicyError",
    "PolicyStore",
    "PolicyTxn",
    "RedisStore",
    "SqliteStore",
    "Suspension",
    "SystemClock",
    "Tenant",
    "Usage",
    "clock_from_env",
    "egress_pool",
    "format_history",
    "generate_licence_keypair",
    "issue_licence",
    "load_licence",
    "show_licence",
]
