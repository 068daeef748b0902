"""A pipe worker that answers each request with the config frame followed by the request
(tests/test_pipeworker.py)."""

from mta.pipeworker import serve_frames


def main() -> None:
    serve_frames(lambda config: (lambda request: config + request))
