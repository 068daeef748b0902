"""[log.rotate] (mta/observe/rotate.py): size- or age-based rotation of the events log."""

from __future__ import annotations

from dataclasses import dataclass

from mta.config.values import Duration, Size

__all__ = ["EventsRotateConfig"]


@dataclass(frozen=True)
class EventsRotateConfig:
    """[log.rotate]: the events log's own rotation (0/0 = none: external logrotate
    with SIGUSR1 or SIGHUP to reopen)."""

    # Rotate when the file reaches this size, or is this old; 0 = not on that ground.
    max_size: Size = 0
    interval: Duration = 0.0
    # Rotated files kept (oldest removed first).
    keep: int = 7
    # "gzip", "zstd" (needs the zstandard package) or "none".
    compress: str = "gzip"

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise ValueError("keep must be at least 1")
        if self.compress not in ("gzip", "zstd", "none"):
            raise ValueError("compress must be one of gzip, zstd, none")
        if self.compress == "zstd":
            try:
                import zstandard  # noqa: F401
            except ImportError:
                raise ValueError("compress = \"zstd\" needs the zstandard package") from None
