"""A small synchronous client of the admin API, for `mta queue ...` and scripts.

The CLI is not an event loop, so this uses the standard library's http.client. It speaks
the same JSON shapes the server writes (mta.http.admin_queue, admin_policy, admin_licence,
admin_shaping).

Transport: `from_config` prefers the daemon's local admin socket (`[http] admin_socket`,
trusted by file permission, no token), and falls back to TCP on `[http] listen` with the
bearer token when the socket is absent, refuses, or this user may not open it.
`AdminClient(url, token)` always uses that URL over TCP.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Any

from mta.config import Config
from mta.http.unix import admin_socket_path, connect_unix

__all__ = ["AdminClient", "AdminError"]


# sysexits(3) for what the operator should do next: 77 fix the token, 69 the daemon (or
# that part of it) is not serving; any other refusal is 1, with the server's message.
_EXIT_BY_STATUS = {401: 77, 403: 77, 503: 69}


class AdminError(Exception):
    """`status`: the HTTP status (None when the daemon could not be reached)."""

    def __init__(self, message: str, exit_code: int = 1, status: int | None = None) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.status = status


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over an AF_UNIX stream socket (urllib has no such transport)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = connect_unix(self.path, self.timeout)


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0, *,
                 unix_socket: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        # Tried first; forgotten after a failed connect, so one CLI run asks it once.
        self.unix_socket = unix_socket
        self._unix_problem: str | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> AdminClient:
        host, port = cfg.http.listen[0]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return cls(f"http://{host}:{port}", cfg.http.admin_token,
                   unix_socket=admin_socket_path(cfg))

    def _unix(self) -> http.client.HTTPConnection | None:
        """A connection over the admin socket, or None (remembering why) to use TCP."""
        if not self.unix_socket:
            return None
        conn = _UnixConnection(self.unix_socket, self.timeout)
        try:
            conn.connect()
        except OSError as e:  # absent, stale, or not this user's to open: TCP then
            self._unix_problem = f"{self.unix_socket}: {e.strerror or e}"
            self.unix_socket = None
            return None
        return conn

    def _tcp(self) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.base_url)
        cls = (http.client.HTTPSConnection if url.scheme == "https"
               else http.client.HTTPConnection)
        return cls(url.hostname or "localhost", url.port, timeout=self.timeout)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None, *, raw: bytes | None = None,
                content_type: str = "application/json") -> Any:
        """`body` is sent as JSON; `raw` as it is, with `content_type` (an import)."""
        prefix = urllib.parse.urlsplit(self.base_url).path
        target = prefix + path
        params = {k: v for k, v in (query or {}).items() if v is not None}
        if params:
            target += "?" + urllib.parse.urlencode(params)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None
                                            else None)
        headers = {"Connection": "close"}
        if data is not None:
            headers["Content-Type"] = content_type
        conn = self._unix()
        if conn is None:
            conn = self._tcp()
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            conn.request(method, target, body=data, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
        except (OSError, http.client.HTTPException) as e:
            where = self.unix_socket or self.base_url
            reason = getattr(e, "strerror", None) or e
            also = f" (nor at {self._unix_problem})" if self._unix_problem else ""
            raise AdminError(f"cannot reach the daemon at {where}: {reason}{also}",
                             exit_code=69) from None
        finally:
            conn.close()
        if resp.status >= 400:
            try:
                err = json.loads(payload)["error"]
                message = f"{err['message']} ({err['code']})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {resp.status}"
            if resp.status == 401 and not self.token:
                socket_note = (f"the admin socket is not usable ({self._unix_problem})"
                               if self._unix_problem else "no admin socket is configured")
                message += f"; [http] admin_token is empty and {socket_note}"
            raise AdminError(message, exit_code=_EXIT_BY_STATUS.get(resp.status, 1),
                             status=resp.status)
        return json.loads(payload or b"{}")

    # --- queue -------------------------------------------------------------------------
    def queue_list(self, state: str | None = None, limit: int = 100, *,
                   tenant: str | None = None, site: str | None = None) -> dict:
        return self.request("GET", "/api/v1/admin/queue", query={
            "state": state, "limit": limit, "tenant": tenant, "site": site})

    def queue_show(self, msg_id: str) -> dict:
        return self.request("GET", f"/api/v1/admin/queue/{urllib.parse.quote(msg_id)}")

    def queue_action(self, msg_id: str, action: str) -> dict:
        if action == "delete":
            return self.request("DELETE", f"/api/v1/admin/queue/{urllib.parse.quote(msg_id)}")
        return self.request("POST", f"/api/v1/admin/queue/{urllib.parse.quote(msg_id)}/{action}")

    def queue_flush(self, msg_id: str | None = None) -> dict:
        if msg_id:
            return self.request("POST", f"/api/v1/admin/queue/{urllib.parse.quote(msg_id)}/flush")
        return self.request("POST", "/api/v1/admin/queue/flush")

    def queue_stats(self) -> dict:
        return self.request("GET", "/api/v1/admin/queue-stats")

    def queue_explain(self, msg_id: str) -> dict:
        return self.request("GET", f"/api/v1/admin/queue/{urllib.parse.quote(msg_id)}/explain")

    # --- policy (mta.http.admin_policy) ------------------------------------------------
    @staticmethod
    def _t(tenant: str) -> str:
        return f"/api/v1/admin/tenants/{urllib.parse.quote(tenant, safe='')}"

    def tenants(self) -> dict:
        return self.request("GET", "/api/v1/admin/tenants")

    def credits_add(self, tenant: str, amount: int, *, paid: bool = False,
                    expires: str | None = None, note: str = "") -> dict:
        return self.request("POST", self._t(tenant) + "/credits", body={
            "amount": amount, "paid": paid, "expires": expires, "note": note})

    def credits(self, tenant: str) -> dict:
        return self.request("GET", self._t(tenant) + "/credits")

    def credits_history(self, tenant: str, limit: int = 100) -> dict:
        return self.request("GET", self._t(tenant) + "/credits/history",
                            query={"limit": limit})

    def credits_paid(self, lot: int) -> dict:
        return self.request("POST", f"/api/v1/admin/credit-lots/{int(lot)}/paid")

    def limits_usage(self, tenant: str) -> dict:
        return self.request("GET", self._t(tenant) + "/limits")

    def limit_set(self, tenant: str, name: str, value: int, *, until: str,
                  reason: str) -> dict:
        return self.request("POST", self._t(tenant) + "/limits", body={
            "name": name, "value": value, "until": until, "reason": reason})

    def limit_clear(self, tenant: str, name: str | None = None) -> dict:
        return self.request("DELETE", self._t(tenant) + "/limits", query={"name": name})

    def suspend(self, tenant: str, reason: str, *, msg_class: str | None = None,
                until: str | None = None, duration: str | None = None) -> dict:
        return self.request("POST", self._t(tenant) + "/suspensions", body={
            "reason": reason, "class": msg_class, "until": until, "duration": duration})

    def resume(self, tenant: str, msg_class: str | None = None) -> dict:
        return self.request("DELETE", self._t(tenant) + "/suspensions",
                            query={"class": msg_class})

    def suspensions(self, tenant: str) -> dict:
        return self.request("GET", self._t(tenant) + "/suspensions")

    @staticmethod
    def _d(domain: str) -> str:
        return (f"/api/v1/admin/sender-domains/{urllib.parse.quote(domain, safe='')}"
                "/suspensions")

    def domain_suspend(self, domain: str, reason: str, *, until: str | None = None,
                       duration: str | None = None) -> dict:
        return self.request("POST", self._d(domain), body={
            "reason": reason, "until": until, "duration": duration})

    def domain_resume(self, domain: str) -> dict:
        return self.request("DELETE", self._d(domain))

    def domain_suspensions(self, domain: str) -> dict:
        return self.request("GET", self._d(domain))

    # --- licence (mta.http.admin_licence) ----------------------------------------------
    def licence(self) -> dict:
        return self.request("GET", "/api/v1/admin/licence")

    # --- shaping (mta.http.admin_shaping) ----------------------------------------------
    def shaping_suspensions(self) -> dict:
        return self.request("GET", "/api/v1/admin/shaping/suspensions")

    def shaping_suspend(self, scope: str, name: str, reason: str,
                        duration: str | float | None = None) -> dict:
        return self.request("POST", "/api/v1/admin/shaping/suspensions", body={
            "scope": scope, "name": name, "reason": reason, "duration": duration})

    def shaping_resume(self, scope: str, name: str) -> dict:
        return self.request("DELETE", "/api/v1/admin/shaping/suspensions/"
                            f"{urllib.parse.quote(scope, safe='')}/"
                            f"{urllib.parse.quote(name, safe='')}")

    def shaping_explain(self, site: str, *, source: str | None = None,
                        tenant: str | None = None) -> dict:
        return self.request("GET", "/api/v1/admin/shaping/sites/"
                            f"{urllib.parse.quote(site, safe='')}",
                            query={"source": source, "tenant": tenant})
