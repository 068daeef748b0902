"""Suppression lists: addresses (or whole domains) a tenant, its sub-accounts or everyone
must not send to, checked at RCPT before policy charges anything (service.py), stored in
the policy store (sqlite.py: policy.db; redis.py: the cluster's Redis)."""

from mta.suppress.entry import GLOBAL, REASONS, Entry, EntryError, normalise_target
from mta.suppress.service import Suppressions, refusal

__all__ = ["GLOBAL", "REASONS", "Entry", "EntryError", "Suppressions", "normalise_target",
           "refusal"]
