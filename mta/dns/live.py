"""The real backend: questions asked of DNS servers with dnspython's asyncio resolver.

Owns the translation of dnspython's outcomes (answers, NXDOMAIN, no answer, SERVFAIL from
every server, timeouts) into `Answer` values. Nameservers come from `[dns] nameservers`
("host" or "host:port", port 53 by default) or, when that is empty, /etc/resolv.conf.
dnspython's own cache is off: mta.dns.resolver caches with its own bounds and counters.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import dns.asyncresolver
import dns.exception
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
        if nameservers:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = [_nameserver(ns) for ns in nameservers]
        else:
            self._resolver = dns.asyncresolver.Resolver()
        self._resolver.cache = None
        self._resolver.lifetime = timeout
        # One try may use all of it: with a single server, a shorter per-try timeout only
        # re-sends the same question to the same server.
        self._resolver.timeout = timeout
        self._resolver.use_edns(0, 0, _EDNS_PAYLOAD)
        self.timeout = timeout

    @property
    def nameservers(self) -> list[str]:
        return [f"{ns.address}:{ns.port}" for ns in self._resolver.nameservers
                if isinstance(ns, dns.nameserver.Do53Nameserver)]

    async def lookup(self, name: str, rdtype: str) -> Answer:
        name = normalize_name(name)
        qname = dns.name.from_text(name + ".")  # valid: CachingResolver checked it
        try:
            result = await self._resolver.resolve(qname, rdtype, search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as e:
            ttl = None
            for response in e.responses().values():
                if isinstance(response, dns.message.Message):
                    ttl = negative_ttl(response.authority)
                    break
            return Answer(name, rdtype, Status.NXDOMAIN, ttl=ttl)
        except dns.resolver.LifetimeTimeout:
            return Answer(name, rdtype, Status.SERVFAIL,
                          detail=f"timed out after {self.timeout:g}s")
        except dns.resolver.NoNameservers as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=_no_nameservers(e))
        except dns.exception.DNSException as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=str(e) or type(e).__name__)
        except OSError as e:
            return Answer(name, rdtype, Status.SERVFAIL, detail=f"network error: {e}")
        if result.rrset is None:
            return Answer(name, rdtype, Status.NODATA,
                          ttl=negative_ttl(result.response.authority))
        # Through a CNAME chain the answer lives as long as its shortest link.
        ttl = min(rrset.ttl for rrset in result.response.answer)
        records = tuple(to_record(rdtype, rd) for rd in result.rrset)
        return Answer(name, rdtype, Status.OK, records, float(ttl))


def _no_nameservers(e: dns.resolver.NoNameservers) -> str:
    """"SERVFAIL from 127.0.0.1@53": the last server's reason, short enough for a DSN."""
    errors = e.kwargs.get("errors") or []
    if not errors:
        return "no nameserver answered"
    server, _tcp, _port, err = errors[-1][:4]
    where = str(server).removeprefix("Do53:")
    return f"{err} from {where}" if err else f"failure from {where}"
