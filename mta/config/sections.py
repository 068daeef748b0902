"""The sections of config.toml, one frozen dataclass each, and `Config`, their sum.

Owns every configurable limit, its default and the reason for that default (the way
Postfix's mail_params.h does). Nothing else in mta invents a default for a limit.

Adding a key: add a field (with a default and a comment) to the section's dataclass; the
loader (loader.py) is driven by the type hints: `Duration`, `Size`, `HostPort`, `Cidr`,
`str`, `int`, `float`, `bool`, `Path`, `list[...]`, `dict[str, Section]` and nested
sections. A rule within one section goes in its `__post_init__` (raise ValueError: it is
reported at the section's key); a rule across sections goes in loader._validate. A large
new feature may keep its sections in its own module here (as values.py keeps the types).
"""

from __future__ import annotations

import ipaddress
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from mta.config.bounces import BouncesConfig
from mta.config.console import ConsoleConfig
from mta.config.content import ContentConfig
from mta.config.dnsbl import DnsblConfig
from mta.config.identity import IdentityConfig
from mta.config.reputation import ReputationConfig
from mta.config.retention import RetentionConfig
from mta.config.rotate import EventsRotateConfig
from mta.config.signing import SigningConfig
from mta.config.suppression import SuppressionConfig
from mta.config.tls import TlsConfig
from mta.config.unsubscribe import UnsubscribeConfig
from mta.config.values import Cidr, Duration, HostPort, Size, Workers, _parse_instant
from mta.config.webhooks import WebhooksConfig


@dataclass(frozen=True)
class ServerConfig:
    # Name used in the banner, EHLO, Received: headers and Message-IDs. The local host name,
    # not getfqdn(): that can block on a DNS lookup at start-up.
    hostname: str = field(default_factory=socket.gethostname)
    # Processes sharing the listeners (SO_REUSEPORT), each with its own spool shard; "auto":
    # one per core. More than one share their state through [cluster] redis_url, or else
    # through a private redis-server the daemon runs itself (mta/embedded_store.py).
    workers: Workers = 1
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
    # DATA lines over 998 octets (RFC 5322 2.1.1), which receivers refuse or mangle: "wrap"
    # folds headers and breaks body lines at white space before the message is signed
    # (Postfix's smtp_line_length_limit does the same), so mail from applications that
    # write whole HTML documents on one line still goes out, signed over what is sent;
    # "reject" answers 550 5.6.0, for operators who want the sender to fix its mail.
    long_lines: str = "wrap"
    # Concurrent sessions in total and per client address (Postfix's anvil default is 50).
    max_connections: int = 2000
    max_connections_per_ip: int = 100
    # RFC 5321 4.5.3.2.7: the server should wait at least 5 minutes for the next command.
    idle_timeout: Duration = 300.0
    # RFC 5321 4.5.3.2.5/6: 3 minutes per data block, 10 minutes for the terminating dot.
    data_timeout: Duration = 600.0
    # Postfix smtpd_hard_error_limit is 20; a client this broken is not going to recover.
    max_errors: int = 20
    # Failed AUTH (mta.smtp.auth.AuthFailures): a failure is answered after
    # auth_failure_delay, doubled for each earlier failure of the same user from the same
    # address (at most 16x). After auth_max_failures within auth_failure_window, AUTH as
    # that user from that address gets 454 until the window passes; other users behind the
    # same address (a NAT) are never refused for it. After auth_max_failures_per_address
    # failures from one address, whatever the users (password spraying), each failure is
    # slowed 16x and ends the connection; a right password is still accepted. 0: ten times
    # auth_max_failures, as a NAT of many users mistyping stays well under it.
    auth_failure_delay: Duration = 1.0
    auth_max_failures: int = 5
    auth_max_failures_per_address: int = 0
    auth_failure_window: Duration = 300.0
    # Implicit-TLS listeners (RFC 8314 "submissions", port 465): TLS from the first byte
    # with the same certificate; no STARTTLS there. Needs tls_cert and tls_key.
    listen_tls: list[HostPort] = field(default_factory=list)
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
    # Bearer token for /api/v1/admin over TCP. Empty: the TCP admin API answers 401 to
    # everything (the local admin_socket still serves it).
    admin_token: str = ""
    # Local admin socket (AF_UNIX, mode 0660): the same API with no token, trusted by file
    # permission as Postfix's postqueue is; `mta queue ...` uses it when it can connect.
    # Unset: <[spool] dir>/admin.sock. Beside the spool because each spool has exactly one
    # daemon, so a checkout, tests and a packaged install never share a socket, and it
    # needs no /run directory (a systemd unit may set /run/mta/admin.sock with
    # RuntimeDirectory=mta). Relative paths are relative to this file; "" turns it off.
    # Read at start (a SIGHUP does not move it).
    admin_socket: str | None = None
    # Requests per API key (POST /api/v1/messages), per node: a token bucket refilled at
    # api_rate per second holding api_burst, and at most api_concurrency in flight. Past
    # either: 429 with Retry-After and RateLimit headers (mta/http/ratelimit.py). 100/s with
    # a burst of 200 is far above what one client's honest use needs (a message per
    # request; batch recipients instead) and far below what would starve other tenants.
    # 0 turns that limit off. [tenants.X] api_rate/api_burst/api_concurrency override.
    api_rate: float = 100.0
    api_burst: int = 200
    api_concurrency: int = 50
    # The same for the admin token over TCP (the local admin socket is not limited): an
    # operator's scripts are few, a leaked token hammering the admin API must not stall it.
    admin_rate: float = 50.0
    admin_burst: int = 100
    admin_concurrency: int = 20
    # Failed authentication per client address (a wrong API key or admin token): each
    # address may fail auth_fail_burst times, then once per 1/auth_fail_rate seconds; past
    # that, every request from it is 429 `auth_rate_limited` without its credentials being
    # checked, so keys and tokens cannot be guessed at speed. Honest clients never fail.
    # 0 turns it off.
    auth_fail_rate: float = 0.2
    auth_fail_burst: int = 20
    # Largest admin API request body (JSON): 413 `payload_too_large` naming it past that.
    # Injection bodies are bounded by [smtp] max_message_size instead.
    max_body: Size = 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("api_rate", "api_burst", "api_concurrency", "admin_rate", "admin_burst",
                     "admin_concurrency", "auth_fail_rate", "auth_fail_burst"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.max_body < 1024:
            raise ValueError("max_body must be at least 1KiB")


@dataclass(frozen=True)
class SpoolConfig:
    # Relative to the config file; for a config file under /etc, /var/spool/mta.
    dir: Path = Path("var/spool")
    # A group commit takes whatever arrived while the previous one was being written, up to
    # this many messages, so one fsync covers many messages under load and none waits idle.
    max_batch: int = 512
    # When a write finds the writer idle, it waits this long for others to share its
    # commit (PostgreSQL's commit_delay, MySQL's binlog_group_commit_sync_delay): each
    # fsync, thread hand-off and wake-up then serves more messages, and every 250 can come
    # that much later. A trade, hence off: 2 ms gave bench/content.py's relay of 3 kB mail
    # 4-10% more throughput and ~30-60 us less daemon CPU per message, and took 11-19% off
    # bench/run.py's ingest, whose 20 sessions each wait for their 250 (bench/README).
    commit_wait: Duration = 0.0
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
    # Bounds on any negative answer's lifetime, SOA or not. The floor: a forwarding
    # resolver hands out its cached SOA with the TTL counting down to 0, and a TTL of 0
    # would mean one question per message for a NODATA AAAA; a minute of staleness costs
    # a new domain nothing (its mail retries in minutes anyway). The ceiling: RFC 2308 5
    # finds one to three hours work well (Unbound's cache-max-negative-ttl is 1 hour).
    negative_ttl_min: Duration = 60.0
    negative_ttl_max: Duration = 3600.0
    # SERVFAIL and timeouts are kept this long, so a broken domain is not asked again for
    # every message; short, because such failures are usually transient (RFC 2308 7.1).
    failure_ttl: Duration = 30.0
    # Questions outstanding at once. A burst of mail to a thousand new domains would
    # otherwise send thousands of UDP queries in the same instant, and resolvers drop what
    # overflows their queues (unbound's num-queries-per-thread is 1024): dropped questions
    # time out and their mail is deferred for nothing.
    max_queries_in_flight: int = 200

    def __post_init__(self) -> None:
        if self.negative_ttl_min > self.negative_ttl_max:
            raise ValueError("negative_ttl_min must not exceed negative_ttl_max")


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
    # Send a "delayed" DSN after this long in the queue; 0 disables it for recipients
    # without NOTIFY. An explicit NOTIFY=DELAY is honoured either way (RFC 3461 4.1): after
    # this long, or at its first deferral when 0. NOTIFY=NEVER or without DELAY: never.
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
    # opportunistic (RFC 7435: encrypt when offered, never authenticate), required (STARTTLS
    # or defer), verify (required, and the certificate must chain to tls_ca_file and name
    # the MX host, RFC 6125), disabled. Per site in [shaping."site"] tls.
    tls: str = "opportunistic"
    # CA bundle (PEM) that "verify" trusts; empty: the system's store (OpenSSL defaults).
    tls_ca_file: str = ""
    # RFC 3030: send the body as one BDAT chunk where the server offers CHUNKING (no dot-
    # stuffing, and a lone CR or LF stays as it is); false: always DATA, as Postfix does.
    chunking: bool = True


@dataclass(frozen=True)
class LogConfig:
    # Events log, JSON lines; empty disables it. Relative to the config file; for a config
    # file under /etc, /var/log/mta/events.jsonl.
    events: str = "var/log/events.jsonl"
    level: str = "info"
    # The daemon's own log lines on stderr (mta.observe.logs): "text" (time level logger:
    # message), "journal" (sd-daemon <N> priority prefix, no time: journald adds it),
    # "json" (one object per line), or "auto": journal when stderr is systemd's journal
    # stream ($JOURNAL_STREAM), else text, so one config suits a terminal and the unit.
    format: str = "auto"
    rotate: EventsRotateConfig = field(default_factory=EventsRotateConfig)


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
    # `mta keys create TENANT` adds keys at run time without editing this file.
    api_keys: list[str] = field(default_factory=list)
    # This tenant's API request limits per key; unset: [http] api_rate/api_burst/
    # api_concurrency (0 = no such limit).
    api_rate: float | None = None
    api_burst: int | None = None
    api_concurrency: int | None = None


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
    # ones, plus RFC 8058's List-Unsubscribe-Post, which must be signed for one-click, and
    # our X-Mta-Ref (mta/bounce/stamp.py), so a complaint's returned copy proves it.
    headers: list[str] = field(default_factory=lambda: [
        "From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
        "In-Reply-To", "References", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "List-Id", "List-Unsubscribe", "List-Unsubscribe-Post",
        "Feedback-ID", "X-Mta-Ref"])
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
    tls: str = ""  # opportunistic | required | verify | disabled; unset: [delivery] tls
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
    # Authenticated tenants send only from their verified domains (MAIL FROM and header
    # From; see [identity]): "enforce" (tenants with registered domains), "strict" (every
    # tenant other than "default"), "off" (pure relays).
    sender_identity: str = "enforce"

    def __post_init__(self) -> None:
        from mta.config.identity import IDENTITY_MODES
        if self.sender_identity not in IDENTITY_MODES:
            raise ValueError(f"sender_identity must be one of {', '.join(IDENTITY_MODES)}")


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
    signing: SigningConfig = field(default_factory=SigningConfig)
    shaping: dict[str, ShapingRuleConfig] = field(default_factory=dict)
    egress: EgressConfig = field(default_factory=EgressConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    rate_limits: RateLimitsConfig = field(default_factory=RateLimitsConfig)
    content: ContentConfig = field(default_factory=ContentConfig)
    suppression: SuppressionConfig = field(default_factory=SuppressionConfig)
    bounces: BouncesConfig = field(default_factory=BouncesConfig)
    unsubscribe: UnsubscribeConfig = field(default_factory=UnsubscribeConfig)
    webhooks: WebhooksConfig = field(default_factory=WebhooksConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    dnsbl: DnsblConfig = field(default_factory=DnsblConfig)
    reputation: ReputationConfig = field(default_factory=ReputationConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Built in: "free" (2,000 unique recipients a month, the product's free tier). A
    # [plans] table in the file replaces this default, so list "free" there if used.
    plans: dict[str, PlanConfig] = field(
        default_factory=lambda: {"free": PlanConfig(unique_recipients_per_month=2000)})
