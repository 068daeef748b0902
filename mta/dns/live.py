"""The real backend: questions asked of DNS servers with dnspython's asyncio resolver.

Owns the translation of dnspython's outcomes (answers, NXDOMAIN, no answer, SERVFAIL from
every server, timeouts) into `Answer` values. Nameservers come from `[dns] nameservers`
("host" or "host:port", port 53 by default) or, when that is empty, /etc/resolv.conf.
dnspython's own cache is off: mta.dns.resolver caches with its own bounds and counters.

Every query sets AD (RFC 6840 5.7: "tell me whether you validated this"), so a validating
resolver's verdict comes back in the answer's `secure` without the cost of DO and the
signatures on every answer; TLSA questions (DANE, RFC 7672) set DO as well, as RFC 7672
2.1.1 expects of a DANE client. A non-validating resolver never sets AD: nothing is secure.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.nameserver
import dns.resolver

from mta.config import parse_hostport
from mta.dns.answer import Answer, Status, normalize_name
from mta.dns.records import negative_ttl, to_record

__all__ = ["LiveLookup"]

# RFC 6891 with the 2020 DNS flag day payload: big enough for a 2048-bit DKIM key without
# falling back to TCP, small enough not to fragment. Larger answers retry over TCP.
_EDNS_PAYLOAD = 1232


def _nameserver(spec: str) -> dns.nameserver.Do53Nameserver:
    host, port = parse_hostport(spec, 53)
    try:
        address = str(ipaddress.ip_address(host))
    except ValueError:
        # A host name: looked up once, when the resolver is built at start-up (from
        # /etc/hosts or the system resolver), never per query.
        address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0]
    return dns.nameserver.Do53Nameserver(address, port)


class LiveLookup:
    """`Lookup` over real DNS. `timeout` bounds one question, all retries included."""

    def __init__(self, nameservers: Sequence[str] = (), timeout: float = 5.0) -> None:
        servers = [_nameserver(ns) for ns in nameservers]
        self._resolver = self._make(servers, timeout, 0)
        self._dnssec = self._make(servers, timeout, dns.flags.DO)  # TLSA
        self.timeout = timeout

    @staticmethod
    def _make(servers: list[dns.nameserver.Do53Nameserver], timeout: float,
              ednsflags: int) -> dns.asyncresolver.Resolver:
        if servers:
            resolver = dns.asyncresolver.Resolver(configure=False)
            resolver.nameservers = list(servers)
        else:
            resolver = dns.asyncresolver.Resolver()
        resolver.cache = None
        resolver.lifetime = timeout
        # One try may use all of it: with a single server, a shorter per-try timeout only
        # re-sends the same question to the same server.
        resolver.timeout = timeout
        resolver.flags = dns.flags.RD | dns.flags.AD
        resolver.use_edns(0, ednsflags, _EDNS_PAYLOAD)
        return resolver

    @property
    def nameservers(self) -> list[str]:
        return [f"{ns.address}:{ns.port}" for ns in self._resolver.nameservers
                if isinstance(ns, dns.nameserver.Do53Nameserver)]

    async def lookup(self, name: str, rdtype: str) -> Answer:
        name = normalize_name(name)
        qname = dns.name.from_text(name + ".")  # valid: CachingResolver checked it
        resolver = self._dnssec if rdtype == "TLSA" else self._resolver
        try:
            result = await resolver.resolve(qname, rdtype, search=False,
                                            raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as e:
            ttl, secure = None, False
            for response in e.responses().values():
                if isinstance(response, dns.message.Message):
                    ttl = negative_ttl(response.authority)
                    secure = bool(response.flags & dns.flags.AD)
                    break
            return Answer(name, rdtype, Status.NXDOMAIN, ttl=ttl, secure=secure)
        except dns.resolver.LifetimeTimeout:
            return Answer(name, rdtype, Status.SERVFAIL,
                          detail=f"timed out after {self.timeout:g}s")
        except dns.resolver.NoNameservers as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=_no_nameservers(e))
        except dns.exception.DNSException as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=str(e) or type(e).__name__)
        except OSError as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=f"network error: {e}")
        secure = bool(result.response.flags & dns.flags.AD)
        canonical = normalize_name(result.canonical_name.to_text())
        canonical = "" if canonical == name else canonical
        if result.rrset is None:
            return Answer(name, rdtype, Status.NODATA,
                          ttl=negative_ttl(result.response.authority), secure=secure,
                          canonical=canonical)
        # Through a CNAME chain the answer lives as long as its shortest link.
        ttl = min(rrset.ttl for rrset in result.response.answer)
        records = tuple(to_record(rdtype, rd) for rd in result.rrset)
        return Answer(name, rdtype, Status.OK, records, float(ttl), secure=secure,
                      canonical=canonical)


def _no_nameservers(e: dns.resolver.NoNameservers) -> str:
    """"SERVFAIL from 127.0.0.1@53": the last server's reason, short enough for a DSN."""
    errors = e.kwargs.get("errors") or []
    if not errors:
        return "no nameserver answered"
    server, _tcp, _port, err = errors[-1][:4]
    where = str(server).removeprefix("Do53:")
    why = f"{err} from {where}" if err else f"failure from {where}"
    response = errors[-1][4] if len(errors[-1]) > 4 else None
    return why + _extended(response)


_EDE_TEXT_MAX = 160  # a resolver's EXTRA-TEXT can be long; a DSN line should not be


def _extended(response: object) -> str:
    """" (EDE 6 DNSSEC Bogus: ...)": the resolver's RFC 8914 extended error, which tells a
    bogus signature (DANE's "dnssec-invalid") from a server that is down."""
    if not isinstance(response, dns.message.Message):
        return ""
    parts = []
    for ede in response.extended_errors():
        name = ede.code.name.replace("_", " ").title().replace("Dnssec", "DNSSEC") \
            if hasattr(ede.code, "name") else str(ede.code)
        text = f": {ede.text[:_EDE_TEXT_MAX]}" if ede.text else ""
        parts.append(f"EDE {int(ede.code)} {name}{text}")
    return f" ({'; '.join(parts)})" if parts else ""
