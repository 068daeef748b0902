"""A pipe worker that answers each request with the config frame followed by the request
(tests/test_pipeworker.py)."""

import time

from mta.pipeworker import serve_frames


def main() -> None:
    serve_frames(lambda config: (lambda request: config + request))


def stamped() -> None:
    """Answers each request with the time (time.monotonic, the clock of the parent's
    event loop too) at which it was handled."""
    serve_frames(lambda config: (lambda request: repr(time.monotonic()).encode()))
