"""CSRF protection of every console POST: the session's token in a hidden form field
(`csrf`), compared in constant time; and, when the browser says where the form came from
(Origin, or Referer without it), that origin must be this console's own."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from aiohttp import web

from mta.console.sessions import Session

__all__ = ["FIELD", "check"]

FIELD = "csrf"


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or origin == "null":
        return origin != "null"  # no header: an old client or a script; the token decides
    return urlsplit(origin).netloc == request.host


def check(request: web.Request, session: Session, form: dict[str, str]) -> bool:
    token = form.get(FIELD, "")
    return (bool(token) and hmac.compare_digest(token.encode(), session.csrf.encode())
            and _same_origin(request))
