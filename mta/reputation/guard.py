"""The reputation guard: counts each tenant's outcomes from the events stream, evaluates
the ladder (mta.reputation.ladder) every `[reputation] interval`, and carries out each
state's action through policy's own tools, so the refusals are the ones operators know:

    warned            an event only
    limited           a temporary operator limit: messages_per_hour = limited_per_hour
    suspended_class   + a suspension of suspend_class (other classes still go)
    suspended         + a suspension of all mail
    terminated        + the tenant's queued mail held (by hand only)

Every move is a `reputation_changed` event with the figures that caused it. States live in
the policy store's keyed records (namespace "reputation"): they survive restarts and, on
Redis, every node reads and moves the same state. What the guard set it also lifts when
the tenant steps down, and only that: a suspension or limit whose reason does not start
with "reputation:" is the operator's and is left alone.

The thresholds, the limit, the class and exemption are each tenant's own
(mta.reputation.thresholds: tenant > parent chain > plan > global); run-time overrides
live in the policy store (namespace "reputation-thresholds"), so every node reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from mta.config.reputation import STATES, ReputationConfig, ThresholdsConfig
from mta.policy.directory import PolicyError
from mta.policy.kv import PolicyKV
from mta.reputation.counts import Counts, classify
from mta.reputation.ladder import TERMINATED, Figures, State, decide, level_of
from mta.reputation.thresholds import (
    Thresholds,
    coerce,
    override_from_json,
    override_to_json,
    thresholds_for,
)

__all__ = ["ReputationError", "ReputationGuard"]

log = logging.getLogger("mta.reputation")

NS = "reputation"
NS_THRESHOLDS = "reputation-thresholds"
TAG = "reputation: "
LIMITED, SUSPENDED_CLASS, SUSPENDED = (STATES.index(s) for s in
                                       ("limited", "suspended_class", "suspended"))


class ReputationError(ValueError):
    """An unknown tenant or state, said to the operator."""


class ReputationGuard:
    def __init__(self, cfg: ReputationConfig, kv: PolicyKV, admin: Any, *, events: Any = None,
                 hold_queue: Callable[[str], Awaitable[int]] | None = None) -> None:
        self.cfg = cfg
        self.kv = kv
        self.admin = admin  # mta.policy.PolicyAdmin
        self.events = events
        self.hold_queue = hold_queue
        self.counts = Counts(kv, cfg.windows)
        self.states: dict[str, State] = {}  # last read, for metrics and `explain`
        # Tenants found exempt: their outcomes are not even counted. Checked again at each
        # evaluation (another node may have changed a run-time override).
        self._exempt = _configured_exempt(cfg)
        # Tenants whose thresholds changed: evaluated next time even without new outcomes.
        self._recheck: set[str] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def clock(self) -> Any:
        return self.admin.engine.clock

    # --- intake ---------------------------------------------------------------------------

    def listen(self, events: Any) -> None:
        events.listeners.append(self.on_event)

    def on_event(self, record: dict[str, Any]) -> None:
        tenant = record.get("tenant")
        if not isinstance(tenant, str) or tenant in self._exempt:
            return
        fields = classify(record)
        if fields:
            self.counts.add(tenant, fields, self.clock.now())

    # --- the loop -------------------------------------------------------------------------

    def start(self) -> ReputationGuard:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reputation")
        return self

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.counts.flush()

    def reload(self, cfg: ReputationConfig) -> None:
        if cfg.windows != self.cfg.windows:
            self.counts = Counts(self.kv, cfg.windows)
        self.cfg = cfg
        self._exempt = _configured_exempt(cfg)  # the rest learnt at the next evaluation
        self._recheck |= set(self.states)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.interval)
            try:
                await self.evaluate()
            except Exception:
                log.exception("reputation: evaluation failed; trying again next interval")

    async def evaluate(self) -> None:
        """Share this node's counts, then move every tenant that had outcomes or is above
        ok (on any node) along the ladder."""
        await self.counts.flush()
        records = await self.kv.items(NS)
        self.states = {t: State.from_json(v) for t, v in records.items()}
        runtime = await self._overrides()
        recheck, self._recheck = self._recheck, set()
        tenants = (self.counts.take_active() | recheck | self._exempt
                   | {t for t, s in self.states.items() if s.level})
        for tenant in sorted(tenants):
            th = await self.thresholds(tenant, runtime)
            if th.exempt:
                self._exempt.add(tenant)
                continue
            self._exempt.discard(tenant)
            await self._evaluate(tenant, self.states.get(tenant, State()), th)

    # --- thresholds -----------------------------------------------------------------------

    async def _overrides(self) -> dict[str, ThresholdsConfig]:
        return {t: override_from_json(v) for t, v in (await self.kv.items(NS_THRESHOLDS)).items()}

    async def thresholds(self, tenant: str,
                         runtime: dict[str, ThresholdsConfig] | None = None) -> Thresholds:
        """The tenant's thresholds through its parent chain and plan (a tenant no longer
        known, or with a broken chain, gets the global ones and its own overrides)."""
        try:
            chain = await self.admin.engine.tenants.chain(tenant)
        except PolicyError:
            chain = ()
        plan = next((t.plan for t in chain if t.plan), "")
        if runtime is None:
            runtime = await self._overrides()
        return thresholds_for(self.cfg, tenant, plan, [t.name for t in chain[1:]], runtime)

    async def figures(self, tenant: str, state: State | None = None) -> list[Figures]:
        state = state or State.from_json(await self.kv.get(NS, tenant))
        return await self.counts.figures(tenant, self.clock.now(), state.cleared_at)

    async def _evaluate(self, tenant: str, state: State, th: Thresholds) -> None:
        now = self.clock.now()
        figures = await self.figures(tenant, state)
        target, why = level_of(figures, th)
        new = decide(state, target, why, now, self.cfg)
        if new is state:
            return
        # Another node may have moved it since we read: act only on what we read.
        current = State.from_json(await self.kv.get(NS, tenant))
        if current.since != state.since or current.level != state.level:
            return
        await self._move(tenant, state, new, figures, by="auto", th=th)

    async def _move(self, tenant: str, old: State, new: State, figures: list[Figures], *,
                    by: str, th: Thresholds | None = None) -> None:
        if new.level != old.level:
            await self._act(tenant, old.level, new.level, new.reason,
                            th or await self.thresholds(tenant))
        await self.kv.put(NS, tenant, new.to_json())
        self.states[tenant] = new
        if new.level != old.level:
            (log.warning if new.level > old.level else log.info)(
                "reputation: tenant %s %s -> %s (%s)", tenant, old.name, new.name, new.reason)
            if self.events is not None:
                self.events.emit("reputation_changed", tenant=tenant, previous=old.name,
                                 state=new.name, reason=new.reason, by=by,
                                 figures=[f.public() for f in figures])

    # --- actions --------------------------------------------------------------------------

    async def _act(self, tenant: str, old: int, new: int, reason: str,
                   th: Thresholds) -> None:
        now = self.clock.now()
        text = TAG + reason
        if new > old:
            if old < LIMITED <= new and th.limited_per_hour:
                # Thirty days at most: lifted when the tenant steps down below "limited".
                await self.admin.set_limit(tenant, "messages_per_hour",
                                           th.limited_per_hour, until=now + 30 * 86400,
                                           reason=text)
            if old < SUSPENDED_CLASS <= new:
                await self._suspend(tenant, text, th.suspend_class)
            if old < SUSPENDED <= new:
                await self._suspend(tenant, text, None)
            if old < TERMINATED <= new and self.hold_queue is not None:
                held = await self.hold_queue(tenant)
                log.warning("reputation: tenant %s terminated; %d queued message(s) held",
                            tenant, held)
            return
        if old >= SUSPENDED > new:
            await self._lift(tenant, None)
        if old >= SUSPENDED_CLASS > new:
            # The class the guard suspended then (the thresholds may have changed since).
            for cls in {s.msg_class for s in await self.admin.suspensions(tenant)
                        if s.msg_class != "*"}:
                await self._lift(tenant, cls)
        if old >= LIMITED > new:
            snap = await self.admin.store.snapshot([tenant], [], now)
            mine = [o for o in snap.limits if o.tenant == tenant and
                    o.name == "messages_per_hour"]
            if mine and all(o.reason.startswith(TAG) for o in mine):
                await self.admin.clear_limit(tenant, "messages_per_hour")

    async def _suspend(self, tenant: str, text: str, msg_class: str | None) -> None:
        try:
            await self.admin.suspend(tenant, text, msg_class=msg_class)
        except Exception as e:  # an unknown class: suspend it all rather than nothing
            log.error("reputation: cannot suspend %s of %s (%s); suspending all mail",
                      msg_class or "all mail", tenant, e)
            if msg_class is not None:
                await self.admin.suspend(tenant, text)

    async def _lift(self, tenant: str, msg_class: str | None) -> None:
        active = [s for s in await self.admin.suspensions(tenant)
                  if s.msg_class == (msg_class or "*")]
        if active and all(s.reason.startswith(TAG) for s in active):
            await self.admin.unsuspend(tenant, msg_class)

    def register_metrics(self, metrics: Any, tenants: list[str]) -> None:
        """The ladder level (0 ok .. 5 terminated) of each configured tenant, as the last
        evaluation read it (bounded labels: configured tenants only)."""
        def levels() -> dict[tuple[str, ...], float]:
            return {(t,): float(self.states[t].level if t in self.states else 0)
                    for t in tenants}

        metrics.add_gauge("mta_tenant_reputation_level", "Escalation level of a tenant: 0 "
                          "ok, 1 warned, 2 limited, 3 suspended_class, 4 suspended, 5 "
                          "terminated.", levels, ["tenant"])

    # --- by hand --------------------------------------------------------------------------

    async def show(self, tenant: str) -> dict[str, Any]:
        await self._known(tenant)
        state = State.from_json(await self.kv.get(NS, tenant))
        figures = await self.figures(tenant, state)
        th = await self.thresholds(tenant)
        target, why = level_of(figures, th)
        return {"tenant": tenant, "state": state.name, "since": state.since or None,
                "reason": state.reason, "manual": state.manual,
                "figures_reach": STATES[target], "why": why,
                "figures": [f.public() for f in figures], "history": state.history,
                "thresholds": th.public()}

    async def set_thresholds(self, tenant: str, changes: dict[str, Any],
                             unset: list[str] | None = None) -> dict[str, Any]:
        """Change the tenant's run-time override (`changes`: key -> value, JSON or text;
        `unset`: keys to drop, "all" for every key); evaluated at the next interval."""
        await self._known(tenant)
        unset = unset or []
        current = override_from_json(await self.kv.get(NS_THRESHOLDS, tenant)).values()
        for key in unset:
            if key == "all":
                current = {}
            elif key in current or key in ThresholdsConfig.__dataclass_fields__:
                current.pop(key, None)
            else:
                raise ReputationError(f"unknown key {key!r}")
        try:
            current.update({k: coerce(k, v) for k, v in changes.items()})
            merged = ThresholdsConfig(**current)  # type: ignore[arg-type]
        except ValueError as e:
            raise ReputationError(str(e)) from None
        classes = self.admin.engine.pc.class_max_age
        if merged.suspend_class is not None and merged.suspend_class not in classes:
            raise ReputationError(f"suspend_class: unknown message class "
                                  f"{merged.suspend_class!r} (one of "
                                  f"{', '.join(sorted(classes))})")
        if merged.values():
            await self.kv.put(NS_THRESHOLDS, tenant, override_to_json(merged))
        else:
            await self.kv.delete(NS_THRESHOLDS, tenant)
        # Its sub-accounts inherit: evaluate every tenant at the next interval that may.
        self._recheck |= {tenant, *self.states}
        self._exempt = _configured_exempt(self.cfg)
        if self.events is not None:
            self.events.emit("reputation_thresholds_changed", tenant=tenant,
                             override=merged.values())
        return await self.show(tenant)

    async def escalate(self, tenant: str, to: str, reason: str) -> State:
        await self._known(tenant)
        if to not in STATES or to == "ok":
            raise ReputationError(f"unknown state {to!r} (one of {', '.join(STATES[1:])})")
        if not reason.strip():
            raise ReputationError("a reason is required")
        old = State.from_json(await self.kv.get(NS, tenant))
        level = STATES.index(to)
        # By hand also downwards: _move undoes what no longer applies.
        new = old.moved(level, self.clock.now(), reason.strip(), "operator", manual=True)
        await self._move(tenant, old, new, await self.figures(tenant, old), by="operator")
        return new

    async def clear(self, tenant: str, reason: str) -> State:
        """Back to ok, with a fresh start: counts from before now no longer count."""
        await self._known(tenant)
        if not reason.strip():
            raise ReputationError("a reason is required")
        old = State.from_json(await self.kv.get(NS, tenant))
        new = old.moved(0, self.clock.now(), reason.strip(), "operator", cleared=True)
        await self._move(tenant, old, new, [], by="operator")
        return new

    async def _known(self, tenant: str) -> None:
        if await self.admin.engine.tenants.get(tenant) is None:
            raise ReputationError(f"unknown tenant {tenant!r}")


def _configured_exempt(cfg: ReputationConfig) -> set[str]:
    return {*cfg.exempt, *(t for t, o in cfg.tenants.items() if o.exempt)}
