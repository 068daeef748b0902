"""/u/TOKEN: RFC 8058 one-click unsubscribe, on the public HTTP listener, without auth (the
token, mta/bounce/token.py, is the authority: it names the tenant and the recipient).

    POST /u/TOKEN   body List-Unsubscribe=One-Click -> event `unsubscribed` (the recipient
                    is suppressed for that tenant), 200 at once
    GET  /u/TOKEN   a small confirmation page whose button POSTs the same; a GET alone never
                    unsubscribes (link scanners and previews fetch every URL in a message)

An unknown, forged or message-level token is 404. The link is [unsubscribe] base_url/u/TOKEN.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import parse_qs

from aiohttp import web

__all__ = ["INBOUND", "routes"]

routes = web.RouteTableDef()

INBOUND: web.AppKey[Any] = web.AppKey("feedback_inbound", object)  # bounce.Inbound | None

_MAX_BODY = 4096  # "List-Unsubscribe=One-Click", in a form of any encoding
_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><meta name="robots" content="noindex">
<title>Unsubscribe</title></head>
<body><h1>Unsubscribe</h1>
<p>Stop mail from this sender to <b>{address}</b>?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button></form></body></html>
"""
_DONE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Unsubscribed</title></head>
<body><p>You are unsubscribed.</p></body></html>
"""


def _page(status: int, text: str) -> web.Response:
    return web.Response(
        status=status, text=text, content_type="text/html", headers={"Cache-Control": "no-store"}
    )


def _ref(request: web.Request) -> Any:
    inbound = request.app.get(INBOUND)
    if inbound is None:
        return None, None
    return inbound, inbound.unsubscribe_ref(request.match_info["token"])


def _one_click(body: bytes) -> bool:
    """RFC 8058 3.2: the body holds List-Unsubscribe=One-Click (urlencoded or multipart)."""
    text = body.decode("utf-8", "replace")
    if "One-Click" in parse_qs(text).get("List-Unsubscribe", []):
        return True
    return 'name="List-Unsubscribe"' in text and "One-Click" in text


@routes.get("/u/{token}")
async def confirm_page(request: web.Request) -> web.Response:
    _, ref = _ref(request)
    if ref is None:
        return _page(404, "<!doctype html><p>This unsubscribe link is not valid.</p>\n")
    return _page(200, _PAGE.format(address=html.escape(ref.recipient)))


@routes.post("/u/{token}")
async def one_click(request: web.Request) -> web.Response:
    inbound, ref = _ref(request)
    if ref is None:
        return _page(404, "<!doctype html><p>This unsubscribe link is not valid.</p>\n")
    if (request.content_length or 0) > _MAX_BODY:
        return _page(413, "<!doctype html><p>Too large.</p>\n")
    body = b""
    while len(body) <= _MAX_BODY and (chunk := await request.content.read(_MAX_BODY)):
        body += chunk  # a chunked body has no length: read no more than the bound
    if len(body) > _MAX_BODY or not _one_click(body):
        return _page(400, "<!doctype html><p>Expected List-Unsubscribe=One-Click.</p>\n")
    inbound.unsubscribe(ref, via="one-click")
    return _page(200, _DONE)
