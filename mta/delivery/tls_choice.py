"""One delivery's transport security, as delivery asks for it: which TLS a message's
connection needs (`TlsChoice.requirement`: the domain's [tls] policy entry, its MTA-STS
policy, the DANE records of its MX hosts, else the path's own tls), and what a session
had (`tls_outcome`, the events' fields). The rules themselves are mta.tls's; this module
owns the lookups they need (MTA-STS discovery, TLSA through the resolver) and their
config."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mta.clock import Clock
from mta.config import Config
from mta.delivery.client import SmtpClient
from mta.dns import MxHost, dane_lookup
from mta.tls import MtaSts, PolicyFetcher, TlsRequirement, choose, dane_host

__all__ = ["TlsChoice", "tls_outcome"]


class TlsChoice:
    def __init__(self, cfg: Config, resolver: Any, *, clock: Clock,
                 emit: Callable[..., Any]) -> None:
        self.cfg = cfg
        self.resolver = resolver
        # MTA-STS (RFC 8461): policies of recipient domains, cached beside the spool.
        self.sts = MtaSts(resolver, self._fetcher(cfg), cfg.spool.dir,
                          retry=cfg.tls.fetch_retry, clock=clock, emit=emit)

    def _fetcher(self, cfg: Config) -> PolicyFetcher:
        t = cfg.tls
        return PolicyFetcher(self.resolver, ca_file=t.ca_file or cfg.delivery.tls_ca_file,
                             timeout=t.fetch_timeout, max_size=t.max_policy_size,
                             port=t.https_port, user_agent=f"mta ({cfg.server.hostname})")

    def reload(self, cfg: Config) -> PolicyFetcher:
        """SIGHUP: the new [tls]; returns the old fetcher, for the caller to close."""
        self.cfg = cfg
        old, self.sts.fetcher = self.sts.fetcher, self._fetcher(cfg)
        self.sts.retry = cfg.tls.fetch_retry
        return old

    async def requirement(self, domain: str, base: str,
                          hosts: Iterable[MxHost] = ()) -> TlsRequirement:
        """What mail to `domain` needs of its connection on a path whose tls is `base`:
        a [tls] policy entry for the domain, else its MTA-STS policy (when [tls]
        mta_sts), else the path's own tls, with DANE for those of its MX `hosts` that
        publish validated TLSA records (when [tls] dane; mta.tls.requirement)."""
        t = self.cfg.tls
        override = t.policy.get(domain)
        sts = override == "mta-sts" or (override is None and t.mta_sts)
        policy = await self.sts.policy_for(domain) if sts else None
        dane = override in ("dane", "dane-only") or (override in (None, "mta-sts") and t.dane)
        lookup = getattr(self.resolver, "lookup", None)
        found: tuple = ()
        if dane and lookup is not None:
            # From the resolver's cache after the first message: MX, A/AAAA, TLSA.
            found = tuple(dane_host(a) for a in await dane_lookup(
                lookup, domain, [h.name for h in hosts]))
        return choose(domain, base, policy, override, dane=dane, dane_hosts=found)


def tls_outcome(client: SmtpClient, req: TlsRequirement) -> dict[str, object]:
    """The session's TLS for the events: version ("none": in the clear), cipher, whether
    the certificate was verified (tls = "verify", MTA-STS; opportunistic STARTTLS, RFC
    7435, encrypts without checking it), the policy applied, and what an MTA-STS testing
    policy would have refused."""
    verified = client.tls_verified or client.dane_verified
    out: dict[str, object] = (
        {"tls": client.tls_version, "tls_cipher": client.tls_cipher,
         "tls_verified": verified} if client.tls_active
        else {"tls": "none", "tls_verified": False})
    # A session a TLSA record authenticated went under DANE, whatever else the domain has;
    # one to an MX host without TLSA under the domain's other policy.
    out["tls_policy"] = "dane" if client.dane_verified else req.label_for(client.host)
    dane = req.dane_for(client.host)
    if dane is not None and dane.result_type:
        out["tls_result"] = dane.result_type  # all TLSA records unusable (RFC 8460)
    failure = req.failure(client.host, tls_verified=client.tls_verified,
                          tls_error=client.tls_error)
    if failure:
        out["tls_failure"] = failure
        if client.tls_result:
            out["tls_result"] = client.tls_result  # RFC 8460 result type (TLS-RPT)
    return out
