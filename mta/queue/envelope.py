"""The envelope of an accepted message: what ingress hands to the spool.

Ingress (SMTP or HTTP) builds one `Envelope` per accepted message; `Spool.put(envelope,
body)` stores it with its body. The spool and everything downstream read it back.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Recipient:
    address: str  # "local@domain" as given in RCPT TO, without angle brackets
    # RFC 3461 DSN parameters from RCPT TO (NOTIFY=..., ORCPT=...); None when not given.
    notify: str | None = None
    orcpt: str | None = None


@dataclass(slots=True)
class Envelope:
    tenant: str
    mail_from: str  # "" is the null reverse-path <>
    recipients: list[Recipient]
    client_ip: str = ""
    helo: str = ""
    auth_user: str | None = None
    # MAIL FROM parameters that travel with the message: BODY, SMTPUTF8, RET, ENVID.
    mail_params: dict[str, str] = field(default_factory=dict)
    received_at: float = 0.0  # unix time of acceptance
    msg_class: str = ""  # policy's message class ("transactional", "marketing", ...)
    expires_at: float = 0.0  # unix time its recipients expire; 0: [delivery] max_age
    # Routing, decided once by policy at acceptance: the egress pool the message leaves
    # from (the tenant's, else its nearest ancestor's, else "default"). "": not decided
    # (messages queued before the spool had the column, local mail without policy):
    # delivery resolves it from the tenant then (mta.delivery.paths.Router).
    pool: str = ""
    # The tenant's ancestors, nearest first (the policy transaction's chain without the
    # tenant itself): delivery holds a sub-account's mail while an ancestor's deliveries
    # are suspended (`mta shaping suspend tenant PARENT`) without asking policy again.
    parents: tuple[str, ...] = ()
