"""Webhooks: events POSTed to HTTP endpoints through a durable outbox (<spool>/webhooks.db).

store.py keeps endpoints, the outbox and the dead-letter list; sign.py is Standard
Webhooks signing; sender.py batches and POSTs with retries; service.py wires them to
the daemon's EventLog.
"""
