"""Observation: the events log and Prometheus metrics."""

from mta.observe.events import EventLog

__all__ = ["EventLog"]
