"""The application's shared state: one typed `web.AppKey` per object `make_app` stores,
so route modules and the app agree on names and types (aiohttp's recommended form)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

__all__ = ["ADMIN_TOKEN", "API_KEYS", "INGRESS", "INJECT_LIMITS", "METRICS", "POLICY_ADMIN",
           "QUEUE_OPS", "SHAPER"]

ADMIN_TOKEN = web.AppKey("admin_token", str)
QUEUE_OPS = web.AppKey("queue_ops", Any)  # admin_queue.QueueOps | None
INGRESS = web.AppKey("ingress", Any)  # inject.IngressLike | None
METRICS = web.AppKey("metrics", Any)  # observe.metrics.Metrics | None
API_KEYS = web.AppKey("api_keys", Any)  # inject.ApiKeys
POLICY_ADMIN = web.AppKey("policy_admin", Any)  # policy.PolicyAdmin | None
INJECT_LIMITS = web.AppKey("inject_limits", Any)  # compose.Limits
SHAPER = web.AppKey("shaper", Any)  # shaping.Shaper | None
