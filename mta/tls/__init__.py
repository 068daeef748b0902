"""Outbound transport security beyond opportunistic STARTTLS: MTA-STS (RFC 8461), DANE
(RFC 7672), and TLS-RPT (RFC 8460) reports of both.

policy.py       the `_mta-sts` TXT record and the policy file, parsed; MX pattern matching
fetch.py        the HTTPS fetch of a policy (aiohttp, verified, through mta's resolver)
cache.py        policies kept in the state directory until their max_age
sts.py          `MtaSts.policy_for(domain)`: lookup, fetch, cache, background refresh
dane.py         TLSA records, usable or not, and whether a presented chain matches them
requirement.py  `choose()`: what one delivery needs of its connection, and why
report.py       TLS-RPT (RFC 8460): the `_smtp._tls` record, the JSON report, result types
report_mail.py  a report as an e-mail (multipart/report; report-type="tlsrpt")
rpt_store.py    TLS-RPT session counts in the policy store (shared, durable)
rpt_collect.py  `TlsSessions`: what delivery tells TLS-RPT about each session
reporting.py    `TlsReporter`: counting, and the daily reports sent to each domain's rua

Other packages import from here only.
"""

from mta.tls.dane import (
    DaneHost,
    DaneResult,
    TlsaRecord,
    TlsaSyntaxError,
    dane_host,
    parse_tlsa,
    verify_chain,
)
from mta.tls.fetch import FetchError, PolicyFetcher
from mta.tls.policy import (
    StsPolicy,
    StsRecord,
    StsSyntaxError,
    mx_matches,
    parse_policy,
    parse_record,
    select_record,
)
from mta.tls.reporting import TlsReporter
from mta.tls.requirement import TlsRequirement, choose
from mta.tls.rpt_collect import TlsSessions
from mta.tls.sts import CACHE_FILE, MtaSts

__all__ = [
    "CACHE_FILE",
    "DaneHost",
    "DaneResult",
    "FetchError",
    "MtaSts",
    "PolicyFetcher",
    "StsPolicy",
    "StsRecord",
    "StsSyntaxError",
    "TlsReporter",
    "TlsRequirement",
    "TlsSessions",
    "TlsaRecord",
    "TlsaSyntaxError",
    "choose",
    "dane_host",
    "mx_matches",
    "parse_policy",
    "parse_record",
    "parse_tlsa",
    "select_record",
    "verify_chain",
]
