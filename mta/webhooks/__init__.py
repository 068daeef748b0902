"""Webhooks: the platform learns what happened to each message by HTTP POST, signed the
Standard Webhooks way, from a durable outbox (service.py). Endpoints: endpoints.py;
the outbox: outbox.py; one POST: sender.py; signatures: sign.py."""

from mta.webhooks.endpoints import Endpoint, EndpointError, Endpoints
from mta.webhooks.service import MAX_PER_TENANT, Webhooks

__all__ = ["MAX_PER_TENANT", "Endpoint", "EndpointError", "Endpoints", "Webhooks"]
