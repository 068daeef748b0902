"""Queue names, formatted and parsed here and nowhere else.

Scheduled queues (where a message waits, named from its metadata, KumoMTA style):

    [campaign:][tenant@]domain[!routing_domain]

    "example.com", "acme@example.com", "spring:acme@example.com",
    "acme@example.com!relay.example.net"

Ready queues (what the receiver sees: which of our sources talks to which of its sites):

    source->site          "ip-1->(alt1|alt2)?.aspmx.l.google.com"

Separators cannot appear inside the parts they separate, so every name round-trips:
`parse(format(x)) == x`. Domains are lower-cased (DNS names are case-insensitive, and one
domain must map to one queue).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReadyQueueName", "ScheduledQueueName", "ready_queue_name", "split_ready_queue_name"]

_SCHEDULED_SEPARATORS = (":", "@", "!")
_READY_SEPARATOR = "->"


def _check_part(what: str, value: str, forbidden: tuple[str, ...]) -> None:
    if not value:
        raise ValueError(f"queue name: {what} must not be empty")
    for sep in forbidden:
        if sep in value:
            raise ValueError(f"queue name: {what} {value!r} must not contain {sep!r}")
    if any(ch.isspace() for ch in value):
        raise ValueError(f"queue name: {what} {value!r} must not contain whitespace")


@dataclass(frozen=True, slots=True)
class ScheduledQueueName:
    domain: str
    tenant: str | None = None
    campaign: str | None = None
    routing_domain: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "domain", self.domain.lower())
        if self.routing_domain is not None:
            object.__setattr__(self, "routing_domain", self.routing_domain.lower())
        _check_part("domain", self.domain, _SCHEDULED_SEPARATORS)
        for what in ("tenant", "campaign", "routing_domain"):
            value = getattr(self, what)
            if value is not None:
                _check_part(what, value, _SCHEDULED_SEPARATORS)

    def __str__(self) -> str:
        out = self.domain
        if self.tenant is not None:
            out = f"{self.tenant}@{out}"
        if self.campaign is not None:
            out = f"{self.campaign}:{out}"
        if self.routing_domain is not None:
            out = f"{out}!{self.routing_domain}"
        return out

    @classmethod
    def parse(cls, name: str) -> ScheduledQueueName:
        """Inverse of str(); ValueError names what is wrong."""
        rest, bang, routing = name.partition("!")
        campaign, colon, rest2 = rest.partition(":")
        if not colon:
            campaign, rest2 = "", rest
        tenant, at, domain = rest2.partition("@")
        if not at:
            tenant, domain = "", rest2
        return cls(domain=domain,
                   tenant=tenant if at else None,
                   campaign=campaign if colon else None,
                   routing_domain=routing if bang else None)


@dataclass(frozen=True, slots=True)
class ReadyQueueName:
    source: str  # egress source name
    site: str  # MX rollup of the destination (dns/ computes it)

    def __post_init__(self) -> None:
        _check_part("source", self.source, (_READY_SEPARATOR,))
        _check_part("site", self.site, (_READY_SEPARATOR,))

    def __str__(self) -> str:
        return f"{self.source}{_READY_SEPARATOR}{self.site}"

    @classmethod
    def parse(cls, name: str) -> ReadyQueueName:
        source, sep, site = name.partition(_READY_SEPARATOR)
        if not sep:
            raise ValueError(f"ready queue name {name!r}: expected \"source->site\"")
        return cls(source=source, site=site)


def ready_queue_name(source: str, site: str) -> str:
    """`str(ReadyQueueName(source, site))` without the checks: for names built per message
    (shaping keys, suspension lookups) from parts that are already valid."""
    return f"{source}{_READY_SEPARATOR}{site}"


def split_ready_queue_name(name: str) -> tuple[str, str]:
    """(source, site) of a ready queue name, without the checks; ("", name) if none."""
    source, sep, site = name.partition(_READY_SEPARATOR)
    return (source, site) if sep else ("", name)
