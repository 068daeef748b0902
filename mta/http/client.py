"""A small synchronous client of the admin API, for `mta queue ...` and scripts.

The CLI is not an event loop, so this uses the standard library's urllib. It speaks the same
JSON shapes the server writes (mta.http.admin_queue).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from mta.config import Config

__all__ = ["AdminClient", "AdminError"]


class AdminError(Exception):
    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AdminClient:
    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    @classmethod
    def from_config(cls, cfg: Config) -> AdminClient:
        host, port = cfg.http.listen[0]
        if host in ("0.0.0.0", "", "::"):
            host = "127.0.0.1" if host != "::" else "::1"
        if ":" in host:
            host = f"[{host}]"
        return cls(f"http://{host}:{port}", cfg.http.admin_token)

    def request(self, method: str, path: str, body: Any = None,
                query: dict[str, Any] | None = None) -> Any:
        url = self.base_url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())["error"]
                message = f"{err['message']} ({err['code']})"
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {e.code}"
            raise AdminError(message, exit_code=1) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise AdminError(f"cannot reach the daemon at {self.base_url}: {reason}",
                             exit_code=69) from None

    # --- queue -------------------------------------------------------------------------
    def queue_list(self, state: str | None = None, limit: int = 100) -> dict:
        return self.request("GET", "/api/v1/admin/queue", query={"state": state, "limit": limit})

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
