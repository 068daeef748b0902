"""RedisStore's Lua scripts, read from `mta/policy/lua/` with the shared prelude in front.

`apply.lua` is the generic plan interpreter (plan.py: reservations, commits, releases,
outcomes, credit lot changes, duplicate checks): every policy rule reaches Redis through
it. The others are storage operations that decide nothing a plan could carry: naming a
transaction's reservations after its message, and adding or lifting operator records
(suspensions, limits). Each runs as one atomic EVALSHA on the keys listed in
redis_store.py, with the semantics of the embedded store (sqlite_store.py).
"""

from __future__ import annotations

from importlib import resources

__all__ = ["ADD_RECORD", "APPLY", "LIFT", "PRELUDE", "PREPARE"]


def _lua(name: str) -> str:
    return (resources.files("mta.policy") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


# Shared by every script: key naming checked against KEYS[], TTLs.
PRELUDE = _lua("prelude")

APPLY = PRELUDE + _lua("apply")
PREPARE = PRELUDE + _lua("prepare")
ADD_RECORD = PRELUDE + _lua("add_record")
LIFT = PRELUDE + _lua("lift")
