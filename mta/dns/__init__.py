"""DNS for delivery: MX resolution (RFC 5321 5.1, RFC 7505), addresses, TXT, a bounded
TTL cache with negative caching and coalescing, the MX rollup into sites, and DANE's
DNSSEC-validated TLSA lookups (mta.dns.dane).

Other packages import from here only:
    resolver = make_resolver(cfg.dns)            # or TestResolver({origin: zone text})
    result = await resolver.resolve_mx("example.com")
    if isinstance(result, DnsFailure): record result.reply()  (permanent or deferral)
    else: result.hosts (MxHost: name, preference, addresses), result.site
"""

from mta.dns.answer import Answer, Status
from mta.dns.dane import TLSA_PORT, TlsaAnswer, dane_lookup, tlsa_name
from mta.dns.mx import parse_literal
from mta.dns.resolver import (
    CachingResolver,
    DnsCounters,
    Resolver,
    TestResolver,
    make_resolver,
)
from mta.dns.result import (
    DnsFailure,
    DnsTemporaryError,
    FailureReason,
    MxHost,
    MxKind,
    MxResult,
)
from mta.dns.site import site_name

__all__ = [
    "TLSA_PORT",
    "Answer",
    "CachingResolver",
    "DnsCounters",
    "DnsFailure",
    "DnsTemporaryError",
    "FailureReason",
    "MxHost",
    "MxKind",
    "MxResult",
    "Resolver",
    "Status",
    "TestResolver",
    "TlsaAnswer",
    "dane_lookup",
    "make_resolver",
    "parse_literal",
    "site_name",
    "tlsa_name",
]
