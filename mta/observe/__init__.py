"""Observation: the events log, Prometheus metrics, the daemon's own log lines (logs.py)
and systemd notification (systemd.py)."""

from mta.observe.events import EventLog

__all__ = ["EventLog"]
