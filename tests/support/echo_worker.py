"""A pipe worker that answers each request with the config frame followed by the request
(tests/test_pipeworker.py)."""

import math
import time

from mta.pipeworker import serve_frames


def main() -> None:
    serve_frames(lambda config: (lambda request: config + request))


def stamped() -> None:
    """Answers each request with the time (time.monotonic, the clock of the parent's
    event loop too) at which it was handled."""
    serve_frames(lambda config: (lambda request: repr(time.monotonic()).encode()))


def _slow(request: bytes) -> bytes:
    time.sleep(0.1)  # a scan that takes a while
    return request


def slow_held() -> None:
    """Takes 0.1 s per request; the answers to one read go out together (hold: no bound,
    as the signing workers run)."""
    serve_frames(lambda config: _slow, hold=math.inf)


def slow_unheld() -> None:
    """Takes 0.1 s per request; each answer goes out as soon as it is ready (hold 0)."""
    serve_frames(lambda config: _slow, hold=0.0)
