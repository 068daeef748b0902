"""SMTP ingress: the ESMTP server clients relay into (RFC 5321, 3207, 4954, 2920, 3461).

`mta serve` builds an `SmtpServer(config, handler, events=...)` with a handler implementing
`IngressHandler` (policy at MAIL/RCPT, the spool at end of DATA). `hash_password` is what
`mta passwd` prints for `[users.NAME] password`.
"""

from mta.smtp.auth import hash_password, verify_password
from mta.smtp.handler import IngressHandler, SessionInfo
from mta.smtp.server import SmtpServer
from mta.smtp.session import Session
from mta.smtp.settings import SessionSettings

__all__ = [
    "IngressHandler",
    "Session",
    "SessionInfo",
    "SessionSettings",
    "SmtpServer",
    "hash_password",
    "verify_password",
]
