"""Configuration: config.toml -> frozen, typed dataclasses.

values.py   the value types (durations, sizes, host:port, CIDR) and ConfigError
sections.py one dataclass per section, with every default and the reason for it
loader.py   parse_config / load_config: TOML -> Config, every problem reported at once
"""

from mta.config.loader import SYSTEM_EVENTS_LOG, SYSTEM_SPOOL_DIR, load_config, parse_config
from mta.config.sections import *  # noqa: F403 (every section class is public API)
from mta.config.sections import Config
from mta.config.values import (
    Cidr,
    ConfigError,
    Duration,
    HostPort,
    Size,
    format_duration,
    parse_duration,
    parse_hostport,
    parse_size,
)

__all__ = [
    "SYSTEM_EVENTS_LOG",
    "SYSTEM_SPOOL_DIR",
    "Cidr",
    "Config",
    "ConfigError",
    "Duration",
    "HostPort",
    "Size",
    "format_duration",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_hostport",
    "parse_size",
]
