"""`mta serve`: builds every part from the config, runs them, and takes them down in order.

Lifecycle (aiohttp web_runner style): open in order - events log, spool, policy, resolver,
delivery, HTTP, SMTP listeners - and close in reverse, also after a start-up that failed
halfway. SIGTERM/SIGINT: stop listening, let in-flight sessions and deliveries finish within
`[server] shutdown_timeout`, sync the spool, exit 0. SIGHUP: reload the config (limits,
users, TLS, DKIM keys) and reopen the events log; a bad new config is refused and the old one
kept. With NOTIFY_SOCKET set (systemd Type=notify) READY=1 is sent once listening.
"""

from __future__ import annotations

import logging

from mta.config import Config

__all__ = ["serve", "validate_runtime"]

log = logging.getLogger("mta")


def validate_runtime(cfg: Config) -> list[str]:
    """Checks that need more than the config file: keys and certificates that must load."""
    return []


def serve(cfg: Config) -> int:
    raise NotImplementedError
