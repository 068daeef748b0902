"""Sender identity: a tenant sends only as the domains it proved it controls.

Ingress asks at MAIL FROM (`answer_mail`) and at end of DATA (`check_header_from`, every
mailbox of every From field), and has forged trace fields removed (`strip_trace`) before
the message is signed. The rule per tenant:

    tenant "default" (relay networks)   [identity] default_tenant
    every other tenant                  [policy] sender_identity
      "enforce"  a tenant with registered domains sends only from its verified ones
                 (and their subdomains); a tenant with none is not checked
      "strict"   as enforce, and a tenant with none registered is refused
      "off"      nothing is checked

The null sender (MAIL FROM:<>) passes the MAIL check; its header From is checked. A
refusal is `550 5.7.1` naming the domain and what to do, and a `sender_refused` event.

DKIM needs nothing here: the signer picks d= from the From domain ([dkim] sections), so
once From is a verified domain with a key, the signature is DMARC-aligned.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mta.config import Config
from mta.policy.dnscheck import check_domain, uncached_txt
from mta.policy.domains import DomainRegistry
from mta.policy.kv import kv_for
from mta.policy.sender_domain import normalise_domain, sender_domain
from mta.policy.trace import strip_forged_trace
from mta.rfc5321.reply import Reply
from mta.rfc5322 import mailbox_addresses, raw_from_fields, unfold

__all__ = ["SenderIdentity", "open_identity"]


def _from_domains(fields: list[bytes]) -> list[str]:
    """The domains of every mailbox of the From fields (raw values): "" for a mailbox with
    no usable domain, and for a field (or a header block) with no mailbox at all."""
    out: list[str] = []
    for field in fields:
        out += [sender_domain(a) or "" for a in mailbox_addresses(unfold(field))] or [""]
    return out or [""]


class SenderIdentity:
    def __init__(self, cfg: Config, registry: DomainRegistry, events: Any = None) -> None:
        self.registry = registry
        self.events = events
        self.reload(cfg)

    def reload(self, cfg: Config) -> None:
        self.cfg = cfg
        self.hostname = cfg.server.hostname
        self.authserv_id = cfg.identity.authserv_id or cfg.server.hostname
        self.registry.cfg = cfg.identity
        self.registry.forget_passes()  # a mode may have changed

    def mode(self, tenant: str) -> str:
        if tenant == "default":
            return self.cfg.identity.default_tenant
        return self.cfg.policy.sender_identity

    def _decide(self, mode: str, tenant: str, domain: str | None, where: str
                ) -> Reply | None:
        """The refusal of `domain` for `tenant` by this node's copy of the records."""
        if mode == "enforce" and not self.registry.has_any(tenant):
            return None
        if domain and self.registry.allowed(tenant, domain) is not None:
            return None
        if self.events is not None:
            self.events.emit("sender_refused", tenant=tenant, domain=domain or "",
                             where=where)
        if not domain:
            return Reply(550, "5.7.1", f"The {where.replace('_', ' ')} has no domain this "
                         "account may send from; use an address at a verified domain")
        state = self.registry.domains(tenant)
        pending = any(domain == d or domain.endswith("." + d) for d in state)
        fix = ("publish its mta-verify TXT record and run `mta domains verify`" if pending
               else "add it with `mta domains add` and verify it")
        return Reply(550, "5.7.1", f"Sender domain {domain} is not a verified sending "
                     f"domain of this account: {fix}")

    # Both checks decide on this node's copy of the records, never waiting for the store:
    # the copy is re-read in the background every few seconds (DomainRegistry.refresh_soon).
    # What passed is remembered until the copy changes (registry.passed): senders repeat,
    # and a remembered pass costs a set lookup instead of parsing and deciding again.

    def answer_mail(self, tenant: str, address: str) -> Reply | None:
        """check_mail for ingress."""
        mode = self.mode(tenant)
        if mode == "off" or not address.strip("<> "):
            return None  # the null sender: bounces of the tenant's own mail
        registry = self.registry
        registry.refresh_soon()
        key = (tenant, address)
        if key in registry.passed:
            return None
        refusal = self._decide(mode, tenant, sender_domain(address) or "", "mail_from")
        if refusal is None:
            registry.remember_pass(key)
        return refusal

    def check_header_from(self, tenant: str, data: bytes) -> Reply | None:
        """Every mailbox of every From field (RFC 5322 allows one; forged mail may carry
        a second), at end of DATA, for ingress."""
        mode = self.mode(tenant)
        if mode == "off":
            return None
        registry = self.registry
        registry.refresh_soon()
        end = data.find(b"\r\n\r\n")
        fields = raw_from_fields(data, end + 2 if end >= 0 else len(data))
        key = (tenant, *fields)
        if key in registry.passed:
            return None
        for domain in _from_domains(fields):
            refusal = self._decide(mode, tenant, domain, "header_from")
            if refusal is not None:
                return refusal
        registry.remember_pass(key)
        return None

    def strip_trace(self, data: bytes, *, msg_id: str, tenant: str) -> bytes:
        if not self.cfg.identity.strip_forged_trace:
            return data
        out, removed = strip_forged_trace(data, self.hostname, self.authserv_id)
        if removed and self.events is not None:
            self.events.emit("trace_removed", id=msg_id, tenant=tenant, count=len(removed),
                             fields=removed)
        return out

    async def check(self, domain: str, signer: Any = None) -> dict[str, Any]:
        """`mta domains check`: SPF, DKIM and DMARC of `domain` and their alignment."""
        d = normalise_domain(domain)
        signing = signer.domain_signing(d) if signer is not None else None
        keys = ({s.selector: s.key.public_p() for s in (*signing.current, *signing.next)}
                if signing is not None else {})
        egress = [s.address for s in self.cfg.egress.source if s.address]
        return await check_domain(d, self.registry.lookup_txt, egress=egress,
                                  signing=signing, public_keys=keys)

    def start(self) -> asyncio.Task[None]:
        """The periodic re-check of verified domains (cancel at shutdown)."""
        return asyncio.get_running_loop().create_task(self.registry.run(),
                                                      name="domain-recheck")


async def open_identity(cfg: Config, store: Any, resolver: Any, events: Any = None,
                        clock: Any = None) -> SenderIdentity:
    """The daemon's SenderIdentity: domains in `store` (the policy store), verification
    TXT records asked through `resolver`'s backend (uncached)."""
    registry = DomainRegistry(kv_for(store), uncached_txt(resolver), cfg.identity,
                              events=events, **({"clock": clock} if clock else {}))
    await registry.load()
    return SenderIdentity(cfg, registry, events)
