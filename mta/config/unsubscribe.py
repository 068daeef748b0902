"""[unsubscribe]: RFC 8058 one-click unsubscribe for marketing mail (mta/bounce/stamp.py,
mta/http/unsubscribe.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["UnsubscribeConfig"]


@dataclass(frozen=True)
class UnsubscribeConfig:
    # Where `POST /u/TOKEN` is reachable from the Internet (the [http] listener, usually
    # behind a TLS proxy): "https://unsub.example.net". The link is BASE/u/TOKEN. "": no
    # https link (the mailto form alone, which is not one-click).
    base_url: str = ""
    # A message of these classes never leaves without a List-Unsubscribe header (the
    # tenant's own, or ours): without base_url and [bounces] it is refused at DATA (550).
    required: bool = True
    # Message classes that get the headers (Gmail and Yahoo require them of bulk mail).
    classes: list[str] = field(default_factory=lambda: ["marketing"])

    def __post_init__(self) -> None:
        url = self.base_url
        if url and not (
            url.startswith(("https://", "http://"))
            and len(url) > 8
            and not any(c in url for c in ' <>,"')
        ):
            raise ValueError(
                f"base_url: {url!r} must be an http(s) URL (RFC 8058: https for one-click)"
            )
