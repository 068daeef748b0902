"""What an SMTP session needs to know from the config, resolved once per (re)load.

`SessionSettings.from_config` is the only place the session's limits come from; the field
defaults are mta/config's own, so a test that builds settings by hand gets the same values.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field

from mta.config import Config, SmtpConfig

__all__ = ["SessionSettings"]


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What a session needs to know from the config, resolved once per (re)load."""

    hostname: str
    # Defaults are mta/config's (the one place that says why), for tests that build these.
    banner: str = SmtpConfig.banner
    max_message_size: int = SmtpConfig.max_message_size
    max_recipients: int = SmtpConfig.max_recipients
    max_errors: int = SmtpConfig.max_errors
    relay_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    tls_available: bool = False
    auth_available: bool = False  # there are users to authenticate
    auth_require_tls: bool = SmtpConfig.auth_require_tls
    # Whether a client address is refused AUTH outright. The server passes none: its locks
    # are per (address, user), once the username is known (mta.smtp.auth.AuthFailures).
    auth_locked: Callable[[str], bool] = field(default=lambda ip: False)
    # [bounces] domains: mail for them is taken from anyone, without AUTH (mta/bounce).
    feedback_domains: frozenset[str] = frozenset()
    # [smtp] long_lines: "wrap" or "reject" lines over 998 octets (mta.smtp.longlines).
    long_lines: str = SmtpConfig.long_lines
    # Whether intake is paused now (`mta drain`, mta.smtp.intake.Intake.paused).
    intake_paused: Callable[[], bool] = field(default=lambda: False)

    @classmethod
    def from_config(cls, config: Config, *, tls_available: bool,
                    auth_locked: Callable[[str], bool] | None = None,
                    intake_paused: Callable[[], bool] | None = None) -> SessionSettings:
        s = config.smtp
        return cls(
            hostname=config.server.hostname,
            banner=s.banner,
            max_message_size=s.max_message_size,
            max_recipients=s.max_recipients,
            max_errors=s.max_errors,
            relay_networks=tuple(s.relay_networks),
            tls_available=tls_available,
            auth_available=bool(config.users),
            auth_require_tls=s.auth_require_tls,
            auth_locked=auth_locked or (lambda ip: False),
            feedback_domains=config.bounces.domains(),
            long_lines=s.long_lines,
            intake_paused=intake_paused or (lambda: False),
        )
