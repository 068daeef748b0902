"""`mta domains check`: what DNS says about a sending domain, as receivers will read it.

    SPF    TXT "v=spf1 ..." at the domain; whether its ip4:/ip6: mechanisms cover our
           egress addresses (include:, a, mx and redirect= are named, not followed)
    DKIM   for the [dkim] section that signs mail From: the domain, each selector's
           "_domainkey" TXT record, and whether its p= matches our key
    DMARC  TXT "v=DMARC1" at _dmarc.<domain> or, failing that, the organisational
           domain (the last two labels: a public suffix list is not shipped), its policy
    alignment  DKIM aligned when d= is the domain or its parent (relaxed; strict with
           adkim=s needs equality); SPF aligned when the record exists for this domain
           (MAIL FROM at the domain itself)

Lookups go to the backend, uncached: an operator checking after a DNS change must see it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from typing import Any

from mta.dns.answer import Status

__all__ = ["check_domain", "uncached_txt"]

Txt = Callable[[str], Awaitable[list[str]]]


def uncached_txt(resolver: Any) -> Txt:
    """TXT strings at a name, asked of the resolver's backend (not its cache). Raises on
    a temporary failure; [] for NXDOMAIN / NODATA."""
    backend = getattr(resolver, "backend", None)

    async def txt(name: str) -> list[str]:
        if backend is None:
            return list(await resolver.resolve_txt(name))
        answer = await backend.lookup(name, "TXT")
        if answer.status is Status.SERVFAIL:
            raise OSError(answer.detail or "SERVFAIL")
        return [str(r) for r in answer.records]
    return txt


def _tags(record: str) -> dict[str, str]:
    out = {}
    for part in record.split(";"):
        k, _, v = part.strip().partition("=")
        if k:
            out[k.strip().lower()] = v.strip()
    return out


def _spf_covers(record: str, address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for term in record.split()[1:]:
        mech = term.lstrip("+")
        for prefix in ("ip4:", "ip6:"):
            if mech.lower().startswith(prefix):
                try:
                    if ip in ipaddress.ip_network(mech[4:], strict=False):
                        return True
                except ValueError:
                    continue
    return False


async def check_domain(domain: str, txt: Txt, *, egress: list[str],
                       signing: Any = None, public_keys: dict[str, str] | None = None
                       ) -> dict[str, Any]:
    """The report as JSON types. `signing`: the signer's DomainSigning for the domain (or
    None), `public_keys`: selector -> our base64 public key, for comparing p=."""
    async def ask(name: str) -> tuple[list[str], str]:
        try:
            return await txt(name), ""
        except Exception as e:
            return [], f"lookup of {name} failed: {e}"

    report: dict[str, Any] = {"domain": domain}
    found, err = await ask(domain)
    spf = [t for t in found if t.lower().startswith("v=spf1")]
    report["spf"] = {
        "record": spf[0] if len(spf) == 1 else None,
        "error": err or ("no SPF record" if not spf else
                         "more than one SPF record (RFC 7208 3.2: permerror)"
                         if len(spf) > 1 else ""),
        "covers_egress": {a: _spf_covers(spf[0], a) for a in egress} if len(spf) == 1
        else {},
    }
    dkim: dict[str, Any] = {"signing_domain": None, "selectors": {}}
    if signing is not None:
        dkim["signing_domain"] = signing.domain
        for selector, ours in (public_keys or {}).items():
            name = f"{selector}._domainkey.{signing.domain}"
            recs, e = await ask(name)
            keys = [_tags(r).get("p", "") for r in recs if "p=" in r]
            dkim["selectors"][selector] = {
                "name": name, "record": recs[0] if recs else None,
                "matches_key": bool(ours) and ours in keys,
                "error": e or ("" if recs else f"no TXT record at {name}")}
    report["dkim"] = dkim
    dmarc_rec, dmarc_at = None, None
    labels = domain.split(".")
    for at in dict.fromkeys([domain, ".".join(labels[-2:])]):
        recs, e = await ask(f"_dmarc.{at}")
        got = [r for r in recs if r.lower().startswith("v=dmarc1")]
        if got:
            dmarc_rec, dmarc_at = got[0], at
            break
    tags = _tags(dmarc_rec) if dmarc_rec else {}
    report["dmarc"] = {"record": dmarc_rec, "at": dmarc_at, "policy": tags.get("p"),
                       "error": "" if dmarc_rec else "no DMARC record"}
    d = dkim["signing_domain"]
    strict_dkim = tags.get("adkim", "r").lower() == "s"
    report["alignment"] = {
        "dkim": bool(d) and (d == domain if strict_dkim else
                             domain == d or domain.endswith("." + d)),
        "spf": len(spf) == 1,
    }
    return report
