"""Reputation guard: per-tenant bounce, complaint and spam-block rates in rolling windows
(counts.py), the escalation ladder as pure rules (ladder.py), and the service that moves
tenants along it and carries out each state's action (guard.py)."""

from mta.reputation.guard import ReputationError, ReputationGuard

__all__ = ["ReputationError", "ReputationGuard"]
