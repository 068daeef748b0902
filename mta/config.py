"""Configuration: config.toml -> frozen, typed dataclasses.

Owns every configurable limit, its default and the reason for that default (the way
Postfix's mail_params.h does). Nothing else in mta invents a default for a limit.

Durations ("90s", "5m", "4h", "5d") and sizes ("25MiB", "10MB", "1000") are parsed once
here. Unknown keys and wrong types are errors; every error names the file and the dotted
key, so `mta check-config` can print one `FILE: key: problem` line per error.

Adding a key: add a field (with a default and a comment) to the section's dataclass. The
loader is driven by the type hints: `Duration`, `Size`, `HostPort`, `Cidr`, `str`, `int`,
`float`, `bool`, `Path`, `list[...]`, `dict[str, Section]` and nested sections.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
import tomllib
import types
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

__all__ = [
    "Cidr",
    "Config",
    "ConfigError",
    "Duration",
    "HostPort",
    "Size",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_hostport",
    "parse_size",
]


class ConfigError(Exception):
    """Raised with every problem found, each as `FILE: key: problem`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


# --- value types -------------------------------------------------------------------------

_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> float:
    """"90s" / "5m" / "4h" / "5d" / "250ms" -> seconds. A bare number means seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like \"5m\"")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration like \"5m\"")
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"invalid duration {value!r}: expected a number and a unit "
                         "(ms, s, m, h, d, w), like \"5m\"")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2) or "s"]


def format_duration(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        n = _DURATION_UNITS[unit]
        if seconds >= n and seconds % n == 0:
            return f"{int(seconds // n)}{unit}"
    return f"{seconds:g}s"


def parse_size(value: object) -> int:
    """"25MiB" / "10MB" / "512KiB" / 1000 -> bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size like \"25MiB\"")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("expected a size like \"25MiB\"")
    m = _SIZE_RE.match(value)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r}: expected a number and a unit "
                         "(B, KB, MB, GB, KiB, MiB, GiB), like \"25MiB\"")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_hostport(value: object, default_port: int | None = None) -> tuple[str, int]:
    """"127.0.0.1:2525" / "[::1]:25" / "host" (with default_port) -> (host, port)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected \"host:port\"")
    value = value.strip()
    host, port_s = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise ValueError(f"invalid address {value!r}: unclosed '['")
        host, rest = value[1:end], value[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"invalid address {value!r}")
            port_s = rest[1:]
    elif value.count(":") == 1:
        host, port_s = value.split(":")
    elif value.count(":") > 1:
        host = value  # a bare IPv6 address
    if not port_s:
        if default_port is None:
            raise ValueError(f"invalid address {value!r}: expected \"host:port\"")
        return host, default_port
    if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
        raise ValueError(f"invalid port in {value!r}")
    return host, int(port_s)


def _parse_cidr(value: object) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ValueError("expected a network like \"127.0.0.0/8\"")
    try:
        return ipaddress.ip_network(value.strip(), strict=False)
    except ValueError:
        raise ValueError(f"invalid network {value!r}: expected CIDR like \"10.0.0.0/8\"") from None


# Markers for Annotated types: the loader converts raw TOML values with these.
Duration = Annotated[float, parse_duration]
Size = Annotated[int, parse_size]
HostPort = Annotated[tuple[str, int], parse_hostport]
Cidr = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network, _parse_cidr]


# --- sections ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ServerConfig:
    # Name used in the banner, EHLO, Received: headers and Message-IDs. The local host name,
    # not getfqdn(): that can block on a DNS lookup at start-up.
    hostname: str = field(default_factory=socket.gethostname)
    # Processes sharing the listeners (SO_REUSEPORT), each with its own spool shard.
    workers: int = 1
    # SIGTERM: how long in-flight sessions and deliveries get before the process exits.
    shutdown_timeout: Duration = 30.0


@dataclass(frozen=True)
class SmtpConfig:
    listen: list[HostPort] = field(default_factory=lambda: [("127.0.0.1", 2525)])
    # Clients that may relay without AUTH, as tenant "default". Loopback only by default:
    # anything wider must be the operator's explicit choice (no open relay).
    relay_networks: list[Cidr] = field(
        default_factory=lambda: [ipaddress.ip_network("127.0.0.0/8")])
    # Gmail, Outlook.com and Yahoo accept about 25 MB; larger mail would bounce downstream.
    max_message_size: Size = 25 * 1024 * 1024
    # Postfix smtpd_recipient_limit is 1000; RFC 5321 4.5.3.1.8 requires at least 100.
    max_recipients: int = 1000
    # RFC 5321 4.5.3.1.4: 512 octets for a command line; extensions (AUTH with a long
    # initial response, SIZE/BODY/SMTPUTF8 params) need more, as Postfix allows 2048.
    max_line_length: int = 2048
    # Concurrent sessions in total and per client address (Postfix's anvil default is 50).
    max_connections: int = 2000
    max_connections_per_ip: int = 100
    # RFC 5321 4.5.3.2.7: the server should wait at least 5 minutes for the next command.
    idle_timeout: Duration = 300.0
    # RFC 5321 4.5.3.2.5/6: 3 minutes per data block, 10 minutes for the terminating dot.
    data_timeout: Duration = 600.0
    # Postfix smtpd_hard_error_limit is 20; a client this broken is not going to recover.
    max_errors: int = 20
    # Failed AUTH: each failure is answered after auth_failure_delay; after auth_max_failures
    # within auth_failure_window a client address is refused AUTH until the window passes.
    auth_failure_delay: Duration = 1.0
    auth_max_failures: int = 5
    auth_failure_window: Duration = 300.0
    # STARTTLS certificate and key (PEM). Without them STARTTLS is not offered.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # AUTH is offered only over TLS, except to loopback clients (RFC 4954 section 4).
    auth_require_tls: bool = True
    # The greeting; "{hostname}" is replaced.
    banner: str = "{hostname} ESMTP mta"


@dataclass(frozen=True)
class HttpConfig:
    listen: list[HostPort] = field(default_factory=lambda: [("127.0.0.1", 8025)])
    # Bearer token for /api/v1/admin. Empty: the admin API answers 401 to everything.
    admin_token: str = ""


@dataclass(frozen=True)
class SpoolConfig:
    # Relative to the config file; for a config file under /etc, /var/spool/mta.
    dir: Path = Path("var/spool")
    # A group commit takes whatever arrived while the previous one was being written, up to
    # this many messages, so one fsync covers many messages under load and none waits idle.
    max_batch: int = 512
    # Cap on the spool database size (0: only the disk limits it). When reached, puts get
    # 452 4.3.1 (RFC 3463 "mail system full") instead of the disk filling for everyone.
    max_size: Size = 0
    # Finished messages (every recipient delivered, bounced or expired) stay listed this
    # long for `mta queue show`, then are purged; their bodies are dropped at once.
    keep_done: Duration = 86400.0


@dataclass(frozen=True)
class DnsConfig:
    # Empty: the system's resolvers from /etc/resolv.conf.
    nameservers: list[str] = field(default_factory=list)
    timeout: Duration = 5.0
    # Cached answers (positive and negative); bounded so a spam run can't eat memory.
    cache_size: int = 100_000
    # How long NXDOMAIN / no-data answers are cached when the server sends no SOA (with an
    # SOA: min(SOA TTL, SOA minimum), RFC 2308 5). 5 minutes: RFC 2308's SERVFAIL ceiling.
    negative_ttl: Duration = 300.0
    # SERVFAIL and timeouts are kept this long, so a broken domain is not asked again for
    # every message; short, because such failures are usually transient (RFC 2308 7.1).
    failure_ttl: Duration = 30.0
    # Questions outstanding at once. A burst of mail to a thousand new domains would
    # otherwise send thousands of UDP queries in the same instant, and resolvers drop what
    # overflows their queues (unbound's num-queries-per-thread is 1024): dropped questions
    # time out and their mail is deferred for nothing.
    max_queries_in_flight: int = 200


@dataclass(frozen=True)
class DeliveryConfig:
    # Remote SMTP port; 25 in production, a test port in tests.
    port: int = 25
    # Retry schedule after each temporary failure; the last step repeats. Postfix backs off
    # from 300s to 4000s; these steps reach 4h within a day, like most sending platforms.
    retry: list[Duration] = field(
        default_factory=lambda: [300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0])
    # Postfix maximal_queue_lifetime is 5d; after that a recipient expires with a DSN.
    max_age: Duration = 5 * 86400.0
    # Send a "delayed" DSN after this long in the queue; 0 disables it.
    delay_warning: Duration = 0.0
    # EHLO name for outgoing connections; empty means [server] hostname.
    ehlo_name: str = ""
    # RFC 5321 4.5.3.2: client timeouts per stage.
    connect_timeout: Duration = 30.0
    greeting_timeout: Duration = 300.0
    command_timeout: Duration = 300.0
    data_timeout: Duration = 600.0
    # Concurrent connections per site before shaping rules say otherwise.
    connection_limit: int = 20
    max_deliveries_per_connection: int = 100
    # RFC 5321 4.5.3.1.8: servers must take at least 100 recipients per transaction.
    max_recipients_per_transaction: int = 100
    idle_timeout: Duration = 30.0
    tls: str = "opportunistic"


@dataclass(frozen=True)
class LogConfig:
    # Events log, JSON lines; empty disables it. Relative to the config file; for a config
    # file under /etc, /var/log/mta/events.jsonl.
    events: str = "var/log/events.jsonl"
    level: str = "info"


@dataclass(frozen=True)
class TenantConfig:
    # Name in [plans]: the tenant's default limits. "" = no plan limits.
    plan: str = ""
    # "active" or "suspended" (refused at MAIL FROM until changed; see `mta policy suspend`
    # for suspensions with a reason, an end date or one message class).
    status: str = "active"
    # Sub-account of this tenant ("" = top-level): own counters and limits, and its mail
    # also counts against (and is bounded by) every ancestor's limits.
    parent: str = ""
    # Egress pool for delivery; "" = the parent's pool, else the default pool.
    pool: str = ""
    # Message classes this tenant may send; empty = every class in [policy] class_max_age.
    classes: list[str] = field(default_factory=list)
    # Class of mail without an X-Mta-Class header; "" = [policy] default_class.
    default_class: str = ""
    # Sends only against paid credits: its own lots (a sub-account without this flag spends
    # its nearest prepaid ancestor's).
    prepaid: bool = False
    # The tenant's own limits, replacing the plan's; unset = the plan's, 0 = unlimited.
    messages_per_hour: int | None = None
    messages_per_day: int | None = None
    messages_per_month: int | None = None
    unique_recipients_per_month: int | None = None
    # Keys for POST /api/v1/messages (`Authorization: Bearer KEY`); each names this tenant.
    api_keys: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class UserConfig:
    tenant: str = "default"
    # scrypt hash as printed by `mta passwd`.
    password: str = ""
    # Client networks this user may authenticate from (CIDRs); empty: anywhere. A stolen
    # password is then no use outside the customer's own servers.
    networks: list[Cidr] = field(default_factory=list)


# --- sections owned by one subpackage each (fields added by that subpackage) -------------

@dataclass(frozen=True)
class BounceConfig:
    """[bounce]: reply classification and DSNs (mta/bounce)."""

    # Operator classification rules (same shape as mta/bounce/rules.toml), checked before
    # the built-in ones; none by default: the built-ins know the large providers.
    rules: Path | None = None
    # Reporting-MTA in DSNs; empty means [server] hostname, the name receivers saw.
    reporting_mta: str = ""
    # RET=FULL (or no RET) returns the whole original only up to this size, else its
    # headers: Postfix's bounce_size_limit is 50000 bytes, for the same reason (a bounce
    # of a large mailing must not cost as much as the mailing).
    max_returned_size: Size = 50_000


def _parse_instant(value: object) -> float:
    """TOML date / datetime (or ISO 8601 string) -> POSIX seconds; no zone means UTC."""
    import datetime as dt  # local: only [dkim] switch_at needs it

    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"invalid date {value!r}: expected 2026-12-01 or "
                             "2026-12-01T00:00:00Z") from None
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if not isinstance(value, dt.datetime):
        raise ValueError("expected a date like 2026-12-01 or 2026-12-01T00:00:00Z")
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


@dataclass(frozen=True)
class DkimDomainConfig:
    """[dkim."example.com"]: signing for one domain (mta/dkim).

    One DKIM-Signature per entry of `algorithms`, each with its own selector and key file
    (one DNS TXT record holds one key): rsa-sha256 uses selector/key, ed25519-sha256 uses
    ed25519_selector/ed25519_key. Rotation: generate and publish next_* in DNS, set
    switch_at; from that instant mail is signed with next_*. Keys: `mta dkim keygen`.
    """
    # RSA is what every receiver verifies; Ed25519 (RFC 8463) is verified by few, so it
    # only makes sense as a second signature beside RSA: ["rsa-sha256", "ed25519-sha256"].
    algorithms: list[str] = field(default_factory=lambda: ["rsa-sha256"])
    # rsa-sha256: selector (DNS name selector._domainkey.DOMAIN) and PEM private key.
    selector: str = ""
    key: Path | None = None
    # ed25519-sha256: its own selector; key is dkimpy's base64 seed (or PKCS#8 PEM).
    ed25519_selector: str = ""
    ed25519_key: Path | None = None
    # Rotation: the keys that take over at switch_at (a TOML date or datetime; no zone
    # means UTC). Unset: no rotation scheduled. next_* without switch_at are only checked
    # by `mta dkim check` (published ahead of scheduling the switch).
    next_selector: str = ""
    next_key: Path | None = None
    next_ed25519_selector: str = ""
    next_ed25519_key: Path | None = None
    switch_at: Annotated[float, _parse_instant] | None = None
    # Signed when present (every instance). RFC 6376 5.4.1's list minus the rarely seen
    # ones, plus RFC 8058's List-Unsubscribe-Post, which must be signed for one-click.
    headers: list[str] = field(default_factory=lambda: [
        "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
        "In-Reply-To", "References", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
        "Feedback-ID"])
    # Signed once more than present (RFC 6376 8.15), so none can be added after signing:
    # a second From would show the reader another sender under our valid signature.
    oversign: list[str] = field(default_factory=lambda: ["From"])
    # header/body: relaxed/relaxed survives the re-folding and whitespace changes that
    # relays make; simple/simple breaks on them.
    canonicalization: str = "relaxed/relaxed"
    # Also sign mail whose From is a subdomain (news.example.com -> d=example.com), when
    # no closer [dkim] section matches.
    subdomains: bool = False
    # This domain's key also signs the server's own DSNs (From: MAILER-DAEMON@[server]
    # hostname), with d= this domain. At most one domain may set it.
    sign_dsn: bool = False


@dataclass(frozen=True)
class ShapingRuleConfig:
    """[shaping.default], [shaping."gmail.com"], ...: one layer of path rules (mta/shaping).

    Every key is optional in a layer (None / "" = not set here). A path (source, site) takes
    each value from the most specific layer that sets it: default, default.source.SRC, the
    site's keys, SITE.source.SRC; else from [delivery]; else from BUILTIN below. Rates are
    strings ("100/s", "5000/h", "1,000/h burst 50") checked by mta.shaping.validate(cfg):
    their parser lives in mta/shaping/rate.py because config must not import shaping.
    """

    # Concurrent connections per path; unset: [delivery] connection_limit.
    connection_limit: int | None = None
    # Messages per path and connections opened per path; unset: no rate limit.
    max_message_rate: str = ""
    max_connection_rate: str = ""
    # Unset: the [delivery] values of the same name.
    max_deliveries_per_connection: int | None = None
    max_recipients_per_transaction: int | None = None
    tls: str = ""  # opportunistic | required | disabled; unset: [delivery] tls
    connect_timeout: Duration | None = None
    greeting_timeout: Duration | None = None
    command_timeout: Duration | None = None
    data_timeout: Duration | None = None
    # Adaptive feedback: this many "slow down" replies in a row (no success between them)
    # suspend the path for suspend_duration (Postfix's dead-site timer).
    suspend_after: int | None = None
    suspend_duration: Duration | None = None
    # Per egress source: [shaping."gmail.com".source."ip1"] (one level deep only).
    source: dict[str, ShapingRuleConfig] = field(default_factory=dict)

    # Values that [delivery] does not hold. 5 signals in a row: one 421 is routine, five
    # with no success between them mean the receiver is refusing us. 5m: Postfix's
    # minimal_backoff_time, the same dead-site wait qmgr uses.
    BUILTIN: typing.ClassVar[dict[str, Any]] = {"suspend_after": 5, "suspend_duration": 300.0}


@dataclass(frozen=True)
class EgressSourceConfig:
    """[[egress.source]]: one sending address (mta/shaping)."""

    # Referenced by pools and [shaping.X.source.NAME]; required.
    name: str = ""
    # Local IPv4/IPv6 address outgoing connections bind to; empty: the OS chooses.
    address: str = ""
    # EHLO name from this address (should match its PTR); empty: [delivery] ehlo_name.
    ehlo_name: str = ""
    # IP warm-up: messages allowed per UTC day, day 1 first, counted from warmup_start
    # ("YYYY-MM-DD"); no cap after the last day, cap 0 before the start. Empty: no warm-up.
    warmup: list[int] = field(default_factory=list)
    warmup_start: str = ""


@dataclass(frozen=True)
class EgressPoolConfig:
    """[egress.pool.NAME]: the sources a message may leave from."""

    # Source name -> relative weight, e.g. { ip1 = 3, ip2 = 1 }.
    sources: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EgressConfig:
    """[[egress.source]] and [egress.pool.NAME]: sending addresses (mta/shaping).

    No sources: one implicit source "default" (OS-chosen address). No pools: pool "default"
    holds every source with weight 1.
    """

    source: list[EgressSourceConfig] = field(default_factory=list)
    pool: dict[str, EgressPoolConfig] = field(default_factory=dict)


@dataclass(frozen=True)
class PolicyConfig:
    """[policy]: credits, quotas, licence (mta/policy)."""

    # "accepted": a credit is spent when the message is accepted; "delivered": it is held
    # at acceptance and refunded if the recipient bounces, expires or is suppressed.
    charge: str = "accepted"
    # IANA zone of the calendar windows: hour/day/month quotas and the licence month.
    timezone: str = "UTC"
    # Signed volume licence (`mta licence issue`); unset = no licence, no volume limit.
    licence_file: Path | None = None
    # Base64 raw Ed25519 public key the licence must be signed with.
    licence_public_key: str = ""
    # Percentages of the licence volume that raise an alert (event, log line, metric).
    licence_alert_levels: list[int] = field(default_factory=lambda: [80, 100])
    # Credit lots bought without an explicit expiry date expire after this many calendar
    # months (12: the usual validity of prepaid e-mail credits).
    credit_validity_months: int = 12
    # The same Message-ID to the same recipient from the same tenant within this window is
    # accepted once ("1d" covers a client's retries after a reply lost to a broken link).
    # Off (0) by default: it costs a policy-store write per recipient (about 0.7 ms of CPU
    # per message, bench/ingest.py) and some applications reuse Message-IDs on purpose.
    duplicate_window: Duration = 0.0
    # Header that names a message's class (ingress removes it before sending).
    class_header: str = "X-Mta-Class"
    # Class of mail with neither the header nor a tenant default_class.
    default_class: str = "transactional"
    # The message classes and how long each may stay queued; 0 = [delivery] max_age.
    # Marketing mail loses its value within a day, and days of retries hurt reputation.
    class_max_age: dict[str, Duration] = field(
        default_factory=lambda: {"transactional": 0.0, "marketing": 86400.0})


@dataclass(frozen=True)
class RateLimitsConfig:
    """[rate_limits]: message rates across delivery paths (mta/shaping), written like the
    path rates ("500/s", "100000/h", "2000/s burst 100"); "" = no such limit. With
    [cluster] redis_url the counters are shared by every node."""

    # Every message this node (or cluster) sends, whatever its tenant, source or site.
    global_message_rate: str = ""
    # Each tenant's sending, each tenant on its own counter.
    tenant_message_rate: str = ""
    # Per provider across all sources: keys are domains like [shaping] keys ("gmail.com"
    # stands for every domain whose MX rolls up to Gmail's site) or site names.
    provider_message_rate: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ClusterConfig:
    # Redis shared by workers and nodes for shaping and policy state; empty: in-process.
    redis_url: str = ""


@dataclass(frozen=True)
class PlanConfig:
    """[plans.NAME]: the limits of the tenants on a plan (mta/policy); 0 = unlimited.

    Counted per accepted recipient in calendar windows of [policy] timezone."""

    messages_per_hour: int = 0
    messages_per_day: int = 0
    messages_per_month: int = 0
    # Distinct recipients per calendar month: the list size that plans are sold by.
    unique_recipients_per_month: int = 0


@dataclass(frozen=True)
class Config:
    path: Path = Path("config.toml")
    server: ServerConfig = field(default_factory=ServerConfig)
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    log: LogConfig = field(default_factory=LogConfig)
    tenants: dict[str, TenantConfig] = field(default_factory=dict)
    users: dict[str, UserConfig] = field(default_factory=dict)
    bounce: BounceConfig = field(default_factory=BounceConfig)
    dkim: dict[str, DkimDomainConfig] = field(default_factory=dict)
    shaping: dict[str, ShapingRuleConfig] = field(default_factory=dict)
    egress: EgressConfig = field(default_factory=EgressConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    # Built in: "free" (2,000 unique recipients a month, the product's free tier). A
    # [plans] table in the file replaces this default, so list "free" there if used.
    plans: dict[str, PlanConfig] = field(
        default_factory=lambda: {"free": PlanConfig(unique_recipients_per_month=2000)})


# --- loader ------------------------------------------------------------------------------

class _Errors:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[str] = []

    def add(self, key: str, problem: str) -> None:
        self.items.append(f"{self.file}: {key}: {problem}")


_MISSING = object()


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        conv = typing.get_args(tp)[1]
        return {parse_duration: "a duration like \"5m\"", parse_size: "a size like \"25MiB\"",
                parse_hostport: "\"host:port\"", _parse_cidr: "a CIDR network"}.get(conv, "value")
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str or tp is Path:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(tp: Any, raw: Any, key: str, errors: _Errors, base: Path) -> Any:
    """Convert one raw TOML value to `tp`; on error record it and return _MISSING."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        conv = typing.get_args(tp)[1]
        try:
            return conv(raw)
        except ValueError as e:
            errors.add(key, str(e))
            return _MISSING
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], raw, key, errors, base)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            errors.add(key, f"expected {_type_name(tp)}")
            return _MISSING
        return _build(tp, raw, key, errors, base)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(raw, list):
            errors.add(key, f"expected {_type_name(tp)} of {_type_name(item_tp)}, "
                            f"got {_toml_type(raw)}")
            return _MISSING
        out = [_convert(item_tp, v, f"{key}[{i}]", errors, base) for i, v in enumerate(raw)]
        return _MISSING if any(v is _MISSING for v in out) else out
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(raw, dict):
            errors.add(key, f"expected {_type_name(tp)}")
            return _MISSING
        out_d = {k: _convert(val_tp, v, f"{key}.{_quote_key(k)}", errors, base)
                 for k, v in raw.items()}
        return _MISSING if any(v is _MISSING for v in out_d.values()) else out_d
    if tp is bool:
        if isinstance(raw, bool):
            return raw
    elif tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif tp is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif tp is str:
        if isinstance(raw, str):
            return raw
    elif tp is Path:
        if isinstance(raw, str) and raw:
            p = Path(raw)
            return p if p.is_absolute() else base / p
    elif tp is Any:
        return raw
    errors.add(key, f"expected {_type_name(tp)}, got {_toml_type(raw)}")
    return _MISSING


def _quote_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'


def _toml_type(raw: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(raw), type(raw).__name__)


def _build(cls: Any, raw: dict[str, Any], prefix: str, errors: _Errors, base: Path) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "path"}
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}.{_quote_key(k)}" if prefix else _quote_key(k)
        if k not in names:
            errors.add(key, "unknown key")
            continue
        value = _convert(hints[k], v, key, errors, base)
        if value is not _MISSING:
            kwargs[k] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        errors.add(prefix or "(top)", str(e))
        return _MISSING


def _validate(cfg: Config, errors: _Errors) -> None:
    """Cross-field rules that the types alone cannot say."""
    s = cfg.smtp
    if not s.listen:
        errors.add("smtp.listen", "at least one address is required")
    if (s.tls_cert is None) != (s.tls_key is None):
        errors.add("smtp.tls_cert" if s.tls_cert is None else "smtp.tls_key",
                   "tls_cert and tls_key must be set together")
    for name in ("tls_cert", "tls_key"):
        p = getattr(s, name)
        if p is not None and not p.is_file():
            errors.add(f"smtp.{name}", f"file not found: {p}")
    for name in ("max_recipients", "max_line_length", "max_connections",
                 "max_connections_per_ip", "max_errors"):
        if getattr(s, name) < 1:
            errors.add(f"smtp.{name}", "must be at least 1")
    if s.max_line_length < 512:
        errors.add("smtp.max_line_length", "must be at least 512 (RFC 5321 4.5.3.1.4)")
    if s.max_message_size < 1024:
        errors.add("smtp.max_message_size", "must be at least 1KiB")
    if cfg.server.workers != 1:
        # One process per spool shard is the plan (DESIGN.md); until the admin API can
        # merge shards, a second worker would hide its queue from `mta queue`.
        errors.add("server.workers", "only 1 is supported in this version")
    if not cfg.server.hostname:
        errors.add("server.hostname", "must not be empty")
    if cfg.spool.max_batch < 1:
        errors.add("spool.max_batch", "must be at least 1")
    if not 0 < cfg.delivery.port < 65536:
        errors.add("delivery.port", "must be a port number (1-65535)")
    if not cfg.delivery.retry:
        errors.add("delivery.retry", "at least one retry interval is required")
    if cfg.delivery.tls not in ("opportunistic", "required", "disabled"):
        errors.add("delivery.tls", "must be \"opportunistic\", \"required\" or \"disabled\"")
    for i, ns in enumerate(cfg.dns.nameservers):
        try:
            parse_hostport(ns, 53)
        except ValueError as e:
            errors.add(f"dns.nameservers[{i}]", str(e))
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        errors.add("log.level", "must be one of debug, info, warning, error")
    for name, user in cfg.users.items():
        key = f"users.{_quote_key(name)}"
        if user.tenant != "default" and user.tenant not in cfg.tenants:
            errors.add(f"{key}.tenant", f"unknown tenant {user.tenant!r}")
        if not user.password.startswith("$scrypt$"):
            errors.add(f"{key}.password", "expected a scrypt hash from `mta passwd`")
    from zoneinfo import ZoneInfo  # policy: quotas reset in this zone; a typo must not start
    pol = cfg.policy
    if pol.charge not in ("accepted", "delivered"):
        errors.add("policy.charge", "must be \"accepted\" or \"delivered\"")
    try:
        ZoneInfo(pol.timezone)
    except (ValueError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        errors.add("policy.timezone", f"unknown time zone {pol.timezone!r}")
    if pol.licence_file is not None and not pol.licence_public_key:
        errors.add("policy.licence_public_key", "required when licence_file is set")
    for name, t in cfg.tenants.items():
        key = f"tenants.{_quote_key(name)}"
        if name.startswith("@"):  # "@domain" names a sender-domain suspension (mta/policy)
            errors.add(key, "a tenant name cannot start with '@'")
        if t.plan and t.plan not in cfg.plans:
            errors.add(f"{key}.plan", f"unknown plan {t.plan!r}")
        if t.parent and t.parent not in cfg.tenants:
            errors.add(f"{key}.parent", f"unknown tenant {t.parent!r}")
        for c in [*t.classes, t.default_class or pol.default_class]:
            if c not in pol.class_max_age:
                errors.add(f"{key}.classes", f"unknown message class {c!r}")


# Where the spool and the events log go when a config file under /etc (FHS: configuration
# only, and read-only under the systemd unit) does not name them.
SYSTEM_SPOOL_DIR = Path("/var/spool/mta")
SYSTEM_EVENTS_LOG = "/var/log/mta/events.jsonl"


def _resolve_defaults(cfg: Config, base: Path, raw: dict[str, Any]) -> Config:
    """Relative default paths are relative to the config file, like the explicit ones
    (a checkout, a test directory), except for a config file under /etc: its defaults are
    /var/spool/mta and /var/log/mta/events.jsonl."""
    system = base == Path("/etc") or Path("/etc") in base.parents
    spool = cfg.spool
    if not spool.dir.is_absolute():  # explicit paths are absolute by now: this is the default
        spool = dataclasses.replace(spool, dir=SYSTEM_SPOOL_DIR if system else base / spool.dir)
    log = cfg.log
    named = isinstance(raw.get("log"), dict) and "events" in raw["log"]
    if system and not named:
        log = dataclasses.replace(log, events=SYSTEM_EVENTS_LOG)
    elif log.events and not Path(log.events).is_absolute():
        log = dataclasses.replace(log, events=str(base / log.events))
    return dataclasses.replace(cfg, spool=spool, log=log)


def parse_config(text: str, file: str = "config.toml", base: Path | None = None,
                 sections: Collection[str] | None = None) -> Config:
    """Parse TOML text; relative paths are resolved against `base` (the file's directory).

    `sections`: only these top-level tables are read, the others keep their defaults, for
    a command that uses nothing else (`mta bounce classify` reads [bounce]): a problem
    elsewhere, such as a TLS pair not made yet, is not its business."""
    errors = _Errors(file)
    base = base if base is not None else Path(file).resolve().parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{file}: (syntax): {e}"]) from None
    if sections is not None:
        raw = {k: v for k, v in raw.items() if k in sections}
    cfg = _build(Config, raw, "", errors, base)
    if cfg is not _MISSING:
        # Values with type errors were left at their defaults, so the cross-field rules
        # can still run and every problem is reported at once.
        cfg = _resolve_defaults(dataclasses.replace(cfg, path=Path(file)), base, raw)
        _validate(cfg, errors)
    if errors.items:
        raise ConfigError(errors.items)
    return cfg


def load_config(path: str | Path, sections: Collection[str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: (file): cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: (file): not UTF-8 text"]) from None
    return parse_config(text, str(path), path.resolve().parent, sections)
