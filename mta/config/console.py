"""[console]: the operator console served under /console/ by the admin HTTP listener
(mta/console). Without accounts the sign-in page is there but nobody can sign in.
[console.accounts.NAME] are the file's accounts: changed only here (and SIGHUP); an admin
makes more at run time, kept in the policy store (mta.console.accounts)."""

from __future__ import annotations

from dataclasses import dataclass, field

from mta.config.values import Duration

__all__ = ["ROLES", "ConsoleAccountConfig", "ConsoleConfig"]

# In order of power: a viewer reads, an operator also acts on the queue and tenants, an
# admin also manages the run-time console accounts (mta.console.accounts).
ROLES = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class ConsoleAccountConfig:
    # scrypt hash as printed by `mta passwd` (the same format as [users.NAME] password).
    password: str = ""
    # viewer | operator | admin; ignored for a tenant account.
    role: str = "viewer"
    # Set: a portal account of this tenant's customer, who sees that tenant only and can
    # act on nothing but its own view.
    tenant: str = ""

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role: must be one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class ConsoleConfig:
    # Sign-in ends after this long without a request, and after session_max in any case.
    session_idle: Duration = 1800.0
    session_max: Duration = 12 * 3600.0
    # The cookie's Secure flag: browsers keep such a cookie on https:// and on loopback
    # (http://127.0.0.1, http://localhost), never on other plain http:// addresses.
    secure_cookie: bool = True
    # Failed sign-ins: at most sign_in_burst at once per client address (and per account
    # name), refilled at sign_in_rate per second.
    sign_in_rate: float = 0.1
    sign_in_burst: int = 5
    # The Overview alerts when the spool's file system has less than this fraction free
    # (10%: room for a few hours of mail at full rate on a disk sized for the queue).
    disk_alert_free: float = 0.10
    # The Overview's figures (alerts, counts, the chart) are fetched again in the open
    # page this often; 0: only when it is loaded.
    overview_refresh: Duration = 15.0
    accounts: dict[str, ConsoleAccountConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 < self.disk_alert_free <= 1:
            raise ValueError("disk_alert_free: a fraction above 0 and at most 1")
        if self.overview_refresh < 0:
            raise ValueError("overview_refresh: must be 0 (off) or positive")
        if self.session_idle <= 0 or self.session_max <= 0:
            raise ValueError("session_idle and session_max: must be positive")
        if self.sign_in_rate <= 0 or self.sign_in_burst < 1:
            raise ValueError("sign_in_rate must be positive and sign_in_burst at least 1")
