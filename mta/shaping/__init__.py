"""Traffic shaping per destination site and per sending address, adaptive and explainable.

The dispatcher holds one `Shaper` (see shaper.py for the call sequence). The pieces are
usable alone: `Rate`/`parse_rate` (rate.py), GCRA throttles (throttle.py, redis_store.py),
connection leases (lease.py), layered path rules (rules.py), egress sources and warm-up
(egress.py), the AIMD feedback loop (adaptive.py), administrative suspensions (suspend.py),
what holds a path now (hold.py) and `validate(cfg)` for the [shaping] and [egress] config
sections (validate.py).
"""

from mta.clock import Clock, ManualClock, SystemClock
from mta.shaping.adaptive import SLOWDOWN_CATEGORIES, Adaptive, Change
from mta.shaping.egress import Egress, EgressSource
from mta.shaping.hold import Hold
from mta.shaping.lease import Lease, Leases, LeaseUnavailable, MemoryLeaseStore
from mta.shaping.rate import Rate, parse_rate
from mta.shaping.rules import PathConfig, resolve_path
from mta.shaping.shaper import Shaper, Stores, memory_stores, redis_stores
from mta.shaping.suspend import Suspension, SuspensionFile, Suspensions
from mta.shaping.throttle import MemoryThrottle, ThrottleState
from mta.shaping.validate import validate

__all__ = [
    "SLOWDOWN_CATEGORIES", "Adaptive", "Change", "Clock", "Egress", "EgressSource", "Hold", "Lease",
    "LeaseUnavailable", "Leases", "ManualClock", "MemoryLeaseStore", "MemoryThrottle",
    "PathConfig", "Rate", "Shaper", "Stores", "Suspension", "SuspensionFile", "Suspensions",
    "SystemClock",
    "ThrottleState", "memory_stores", "parse_rate", "redis_stores", "resolve_path",
    "validate",
]
