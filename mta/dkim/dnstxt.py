"""Fetching DKIM key records (`selector._domainkey.domain` TXT) with dnspython from the
configured `[dns] nameservers`, for `mta dkim check` and as dkimpy's `dnsfunc` hook.

Synchronous on purpose: its users are a command-line tool and dkimpy's (synchronous)
verifier, never the server's event loop.
"""

from __future__ import annotations

import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from mta.config import parse_hostport

__all__ = ["DkimDnsError", "TxtLookup", "txt_lookup"]


class DkimDnsError(Exception):
    """The lookup itself failed (timeout, SERVFAIL): says nothing about the record."""


class TxtLookup:
    """TXT lookups against fixed nameservers ("host" or "host:port"; empty: the system's)."""

    def __init__(self, nameservers: list[str], timeout: float = 5.0) -> None:
        if nameservers:
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(*parse_hostport(ns, 53)) for ns in nameservers]
        else:
            self._resolver = dns.resolver.Resolver()
        self._resolver.lifetime = timeout
        self._resolver.timeout = timeout

    def records(self, name: str) -> list[bytes]:
        """Each TXT record at `name`, its strings joined (RFC 6376 3.6.2.2); [] if none."""
        try:
            answer = self._resolver.resolve(name, dns.rdatatype.TXT, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as e:
            raise DkimDnsError(f"{name}: {e}") from None
        return [b"".join(r.strings) for r in answer]

    def __call__(self, name: bytes | str, timeout: float = 5.0) -> bytes | None:
        """dkimpy's dnsfunc(name, timeout): the first record, or None."""
        if isinstance(name, bytes):
            name = name.decode("ascii")
        try:
            found = self.records(name)
        except DkimDnsError:
            return None
        return found[0] if found else None


def txt_lookup(nameservers: list[str], timeout: float = 5.0) -> TxtLookup:
    return TxtLookup(nameservers, timeout)
