"""The replies policy refuses with: one function per reason, codes chosen once here.

Temporary (4xx) when waiting fixes it: a quota window resets, credits get bought, a
licence gets renewed, a suspension with an end date ends. Permanent (5xx) when only a
change of account or message would: unknown tenant, forbidden message class, suspension
without an end. RFC 3463: X.7.1 "delivery not authorized", X.3.5 "system incorrectly
configured" (a broken licence is the operator's problem, not the sender's).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from mta.policy.store import Suspension
from mta.rfc5321 import Reply

__all__ = ["class_forbidden", "class_unknown", "credit_exhausted", "licence_exhausted",
           "licence_unusable", "limit_reached", "policy_unavailable", "sender_domain_suspended",
           "store_unavailable", "suspended", "suspended_in_config", "tenant_unknown"]


def _when(ts: float, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M %Z")


def tenant_unknown(tenant: str) -> Reply:
    return Reply(550, "5.7.1", f"Tenant {tenant} is not known here")


def store_unavailable() -> Reply:
    # Postfix smtpd_check: a lookup that fails temporarily defers, it never accepts.
    return Reply(451, "4.3.0", "Sending policy temporarily unavailable; try again later")


def suspended_in_config(tenant: str) -> Reply:
    return Reply(554, "5.7.1", f"Tenant {tenant} is suspended")


def policy_unavailable(problem: str) -> Reply:
    return Reply(451, "4.3.5", f"Sending policy misconfigured: {problem}")


def licence_unusable(problem: str) -> Reply:
    return Reply(451, "4.3.5", f"Sending disabled: {problem}")


def licence_exhausted(used: int, volume: int, licensee: str, month: str) -> Reply:
    return Reply(451, "4.7.1", f"Licence volume exhausted: {used:,} of {volume:,} recipients "
                               f"in {month} (licence of {licensee})")


def suspended(s: Suspension, tz: ZoneInfo) -> Reply:
    what = "" if s.msg_class == "*" else f" for {s.msg_class} mail"
    reason = f": {s.reason}" if s.reason else ""
    if s.until is None:
        return Reply(554, "5.7.1", f"Tenant {s.tenant} is suspended{what}{reason}")
    return Reply(451, "4.7.1", f"Tenant {s.tenant} is suspended{what} until "
                               f"{_when(s.until, tz)}{reason}")


def sender_domain_suspended(domain: str, s: Suspension, tz: ZoneInfo) -> Reply:
    """A suspension of the MAIL FROM domain (subject "@domain"): the same codes as a tenant
    suspension (5.7.1 until lifted, 4.7.1 when it has an end), naming the domain, since any
    tenant sending as that domain gets it."""
    reason = f": {s.reason}" if s.reason else ""
    if s.until is None:
        return Reply(554, "5.7.1", f"Sender domain {domain} is suspended{reason}")
    return Reply(451, "4.7.1", f"Sender domain {domain} is suspended until "
                               f"{_when(s.until, tz)}{reason}")


def limit_reached(label: str, limit: int, tenant: str, source: str, reset: float,
                  tz: ZoneInfo) -> Reply:
    return Reply(451, "4.7.1", f"{label[0].upper()}{label[1:]} of {limit:,} reached for "
                               f"{tenant} ({source}); resets {_when(reset, tz)}")


def credit_exhausted(wallet: str) -> Reply:
    return Reply(452, "4.7.1", f"Insufficient prepaid credits: {wallet} has no paid, "
                               "unexpired credit left")


def class_unknown(value: str, known: list[str], header: str) -> Reply:
    return Reply(550, "5.7.1", f"Unknown message class {value!r} in {header} "
                               f"(known: {', '.join(known)})")


def class_forbidden(tenant: str, msg_class: str) -> Reply:
    return Reply(550, "5.7.1", f"Tenant {tenant} may not send {msg_class} mail")
