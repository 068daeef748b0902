"""config.toml -> Config: the loader driven by the sections' type hints.

Unknown keys and wrong types are errors; every error names the file and the dotted key, so
`mta check-config` can print one `FILE: key: problem` line per error, all at once.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any

from mta.config.sections import Config
from mta.config.values import (
    ConfigError,
    _parse_cidr,
    parse_duration,
    parse_hostport,
    parse_size,
)
from mta.embedded_store import redis_server

# --- loader ------------------------------------------------------------------------------

class _Errors:
    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[str] = []

    def add(self, key: str, problem: str) -> None:
        self.items.append(f"{self.file}: {key}: {problem}")


_MISSING = object()


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Annotated:
        conv = typing.get_args(tp)[1]
        return {parse_duration: "a duration like \"5m\"", parse_size: "a size like \"25MiB\"",
                parse_hostport: "\"host:port\"", _parse_cidr: "a CIDR network"}.get(conv, "value")
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str or tp is Path:
        return "a string"
    origin = typing.get_origin(tp)
    if origin is list:
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _convert(tp: Any, raw: Any, key: str, errors: _Errors, base: Path) -> Any:
    """Convert one raw TOML value to `tp`; on error record it and return _MISSING."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        conv = typing.get_args(tp)[1]
        try:
            return conv(raw)
        except ValueError as e:
            errors.add(key, str(e))
            return _MISSING
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _convert(args[0], raw, key, errors, base)
    if dataclasses.is_dataclass(tp):
        if not isinstance(raw, dict):
            errors.add(key, f"expected {_type_name(tp)}")
            return _MISSING
        return _build(tp, raw, key, errors, base)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(raw, list):
            errors.add(key, f"expected {_type_name(tp)} of {_type_name(item_tp)}, "
                            f"got {_toml_type(raw)}")
            return _MISSING
        out = [_convert(item_tp, v, f"{key}[{i}]", errors, base) for i, v in enumerate(raw)]
        return _MISSING if any(v is _MISSING for v in out) else out
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(raw, dict):
            errors.add(key, f"expected {_type_name(tp)}")
            return _MISSING
        out_d = {k: _convert(val_tp, v, f"{key}.{_quote_key(k)}", errors, base)
                 for k, v in raw.items()}
        return _MISSING if any(v is _MISSING for v in out_d.values()) else out_d
    if tp is bool:
        if isinstance(raw, bool):
            return raw
    elif tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
    elif tp is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
    elif tp is str:
        if isinstance(raw, str):
            return raw
    elif tp is Path:
        if isinstance(raw, str) and raw:
            p = Path(raw)
            return p if p.is_absolute() else base / p
    elif tp is Any:
        return raw
    errors.add(key, f"expected {_type_name(tp)}, got {_toml_type(raw)}")
    return _MISSING


def _quote_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'


def _toml_type(raw: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(raw), type(raw).__name__)


def _build(cls: Any, raw: dict[str, Any], prefix: str, errors: _Errors, base: Path) -> Any:
    hints = typing.get_type_hints(cls, include_extras=True)
    names = {f.name for f in dataclasses.fields(cls) if f.init and f.name != "path"}
    kwargs: dict[str, Any] = {}
    for k, v in raw.items():
        key = f"{prefix}.{_quote_key(k)}" if prefix else _quote_key(k)
        if k not in names:
            errors.add(key, "unknown key")
            continue
        value = _convert(hints[k], v, key, errors, base)
        if value is not _MISSING:
            kwargs[k] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        errors.add(prefix or "(top)", str(e))
        return _MISSING


def build_table(cls: Any, raw: dict[str, Any], where: str, base: Path | None = None) -> Any:
    """One config table given at run time (e.g. a content rule sent to the admin API),
    converted and checked exactly as the file's would be; ConfigError names each problem
    as `where: key: problem`."""
    errors = _Errors(where)
    if not isinstance(raw, dict):
        raise ConfigError([f"{where}: (top): expected a table"])
    obj = _build(cls, raw, "", errors, base or Path.cwd())
    if errors.items or obj is _MISSING:
        raise ConfigError(errors.items or [f"{where}: (top): invalid"])
    return obj


def _validate(cfg: Config, errors: _Errors) -> None:
    """Cross-field rules that the types alone cannot say."""
    s = cfg.smtp
    if not s.listen:
        errors.add("smtp.listen", "at least one address is required")
    if (s.tls_cert is None) != (s.tls_key is None):
        errors.add("smtp.tls_cert" if s.tls_cert is None else "smtp.tls_key",
                   "tls_cert and tls_key must be set together")
    if s.listen_tls and s.tls_cert is None:
        errors.add("smtp.listen_tls", "implicit TLS needs smtp.tls_cert and smtp.tls_key")
    for name in ("tls_cert", "tls_key"):
        p = getattr(s, name)
        if p is not None and not p.is_file():
            errors.add(f"smtp.{name}", f"file not found: {p}")
    for name in ("max_recipients", "max_line_length", "max_connections",
                 "max_connections_per_ip", "max_errors"):
        if getattr(s, name) < 1:
            errors.add(f"smtp.{name}", "must be at least 1")
    if s.auth_max_failures_per_address < 0:
        errors.add("smtp.auth_max_failures_per_address", "must be 0 (10x auth_max_failures) "
                                                         "or more")
    if s.long_lines not in ("wrap", "reject"):
        errors.add("smtp.long_lines", 'must be "wrap" or "reject"')
    if s.max_line_length < 512:
        errors.add("smtp.max_line_length", "must be at least 512 (RFC 5321 4.5.3.1.4)")
    if s.max_message_size < 1024:
        errors.add("smtp.max_message_size", "must be at least 1KiB")
    if cfg.server.workers > 1 and not cfg.cluster.redis_url and redis_server() is None:
        # Workers share credits, quotas, suspensions and throttles exactly as the nodes of
        # a cluster do: through Redis, the cluster's or a private one (mta.embedded_store).
        errors.add("server.workers", "more than 1 worker needs [cluster] redis_url or the "
                   "redis-server program (Debian package redis-server) for the embedded "
                   "store that policy and shaping state are shared through")
    if not cfg.server.hostname:
        errors.add("server.hostname", "must not be empty")
    if cfg.spool.max_batch < 1:
        errors.add("spool.max_batch", "must be at least 1")
    if not 0 <= cfg.spool.commit_wait <= 0.1:
        errors.add("spool.commit_wait", "must be between 0 and 100ms")
    if not 0 < cfg.delivery.port < 65536:
        errors.add("delivery.port", "must be a port number (1-65535)")
    if not cfg.delivery.retry:
        errors.add("delivery.retry", "at least one retry interval is required")
    if cfg.delivery.tls not in ("opportunistic", "required", "verify", "disabled"):
        errors.add("delivery.tls", "must be \"opportunistic\", \"required\", \"verify\" or "
                   "\"disabled\"")
    if cfg.delivery.tls_ca_file and not os.path.isfile(cfg.delivery.tls_ca_file):
        errors.add("delivery.tls_ca_file", f"file not found: {cfg.delivery.tls_ca_file}")
    for key, problem in cfg.tls.problems():
        errors.add(f"tls.{key}", problem)
    for i, ns in enumerate(cfg.dns.nameservers):
        try:
            parse_hostport(ns, 53)
        except ValueError as e:
            errors.add(f"dns.nameservers[{i}]", str(e))
    if cfg.log.level not in ("debug", "info", "warning", "error"):
        errors.add("log.level", "must be one of debug, info, warning, error")
    if cfg.log.format not in ("auto", "text", "journal", "json"):
        errors.add("log.format", "must be one of auto, text, journal, json")
    for name, user in cfg.users.items():
        key = f"users.{_quote_key(name)}"
        if user.tenant != "default" and user.tenant not in cfg.tenants:
            errors.add(f"{key}.tenant", f"unknown tenant {user.tenant!r}")
        if not user.password.startswith("$scrypt$"):
            errors.add(f"{key}.password", "expected a scrypt hash from `mta passwd`")
    for name, acct in cfg.console.accounts.items():
        key = f"console.accounts.{_quote_key(name)}"
        if acct.tenant and acct.tenant != "default" and acct.tenant not in cfg.tenants:
            errors.add(f"{key}.tenant", f"unknown tenant {acct.tenant!r}")
        if not acct.password.startswith("$scrypt$"):
            errors.add(f"{key}.password", "expected a scrypt hash from `mta passwd`")
    from zoneinfo import ZoneInfo  # policy: quotas reset in this zone; a typo must not start
    pol = cfg.policy
    # A class name misspelt here would silently send marketing mail without the headers.
    for i, cls in enumerate(cfg.unsubscribe.classes):
        if cls not in pol.class_max_age:
            errors.add(f"unsubscribe.classes[{i}]", f"unknown message class {cls!r} (one of "
                       f"{', '.join(sorted(pol.class_max_age))}: [policy] class_max_age)")
    if cfg.reputation.suspend_class not in pol.class_max_age:
        errors.add("reputation.suspend_class", f"unknown message class "
                   f"{cfg.reputation.suspend_class!r} (one of "
                   f"{', '.join(sorted(pol.class_max_age))})")
    _validate_reputation(cfg, errors)
    if pol.charge not in ("accepted", "delivered"):
        errors.add("policy.charge", "must be \"accepted\" or \"delivered\"")
    try:
        ZoneInfo(pol.timezone)
    except (ValueError, LookupError):  # ZoneInfoNotFoundError is a KeyError
        errors.add("policy.timezone", f"unknown time zone {pol.timezone!r}")
    if pol.licence_file is not None and not pol.licence_public_key:
        errors.add("policy.licence_public_key", "required when licence_file is set")
    for name, t in cfg.tenants.items():
        key = f"tenants.{_quote_key(name)}"
        if name.startswith("@"):  # "@domain" names a sender-domain suspension (mta/policy)
            errors.add(key, "a tenant name cannot start with '@'")
        if t.plan and t.plan not in cfg.plans:
            errors.add(f"{key}.plan", f"unknown plan {t.plan!r}")
        if t.parent and t.parent not in cfg.tenants:
            errors.add(f"{key}.parent", f"unknown tenant {t.parent!r}")
        for c in [*t.classes, t.default_class or pol.default_class]:
            if c not in pol.class_max_age:
                errors.add(f"{key}.classes", f"unknown message class {c!r}")


def _validate_reputation(cfg: Config, errors: _Errors) -> None:
    """Per-plan and per-tenant thresholds name a plan and a tenant of this file, and a
    message class [policy] knows (a typo would silently leave the global figures)."""
    classes = cfg.policy.class_max_age
    layers = [("plans", cfg.reputation.plans, cfg.plans),
              ("tenants", cfg.reputation.tenants, cfg.tenants)]
    for kind, tables, known in layers:
        for name, t in tables.items():
            key = f"reputation.{kind}.{_quote_key(name)}"
            if name not in known and not (kind == "tenants" and name == "default"):
                what = "plan" if kind == "plans" else "tenant"
                errors.add(key, f"unknown {what} {name!r} (not in [{kind}])"
                           + ("; a tenant made at run time takes its thresholds from `mta "
                              "policy reputation TENANT --set`" if kind == "tenants" else ""))
            if t.suspend_class is not None and t.suspend_class not in classes:
                errors.add(f"{key}.suspend_class", f"unknown message class "
                           f"{t.suspend_class!r} (one of {', '.join(sorted(classes))})")


# Where the spool and the events log go when a config file under /etc (FHS: configuration
# only, and read-only under the systemd unit) does not name them.
SYSTEM_SPOOL_DIR = Path("/var/spool/mta")
SYSTEM_EVENTS_LOG = "/var/log/mta/events.jsonl"


def _resolve_defaults(cfg: Config, base: Path, raw: dict[str, Any]) -> Config:
    """Relative default paths are relative to the config file, like the explicit ones
    (a checkout, a test directory), except for a config file under /etc: its defaults are
    /var/spool/mta and /var/log/mta/events.jsonl."""
    system = base == Path("/etc") or Path("/etc") in base.parents
    if cfg.server.workers == 0:  # "auto": one per core, if their shared store can run
        cores = min(len(os.sched_getaffinity(0)) or 1, 64)
        shared = bool(cfg.cluster.redis_url) or redis_server() is not None
        cfg = dataclasses.replace(cfg, server=dataclasses.replace(
            cfg.server, workers=cores if shared else 1))
    spool = cfg.spool
    if not spool.dir.is_absolute():  # explicit paths are absolute by now: this is the default
        spool = dataclasses.replace(spool, dir=SYSTEM_SPOOL_DIR if system else base / spool.dir)
    log = cfg.log
    named = isinstance(raw.get("log"), dict) and "events" in raw["log"]
    if system and not named:
        log = dataclasses.replace(log, events=SYSTEM_EVENTS_LOG)
    elif log.events and not Path(log.events).is_absolute():
        log = dataclasses.replace(log, events=str(base / log.events))
    http = cfg.http
    if http.admin_socket is None:
        http = dataclasses.replace(http, admin_socket=str(spool.dir / "admin.sock"))
    elif http.admin_socket and not Path(http.admin_socket).is_absolute():
        http = dataclasses.replace(http, admin_socket=str(base / http.admin_socket))
    return dataclasses.replace(cfg, spool=spool, log=log, http=http)


def parse_config(text: str, file: str = "config.toml", base: Path | None = None,
                 sections: Collection[str] | None = None) -> Config:
    """Parse TOML text; relative paths are resolved against `base` (the file's directory).

    `sections`: only these top-level tables are read, the others keep their defaults, for
    a command that uses nothing else (`mta bounce classify` reads [bounce]): a problem
    elsewhere, such as a TLS pair not made yet, is not its business."""
    errors = _Errors(file)
    base = base if base is not None else Path(file).resolve().parent
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([f"{file}: (syntax): {e}"]) from None
    if sections is not None:
        raw = {k: v for k, v in raw.items() if k in sections}
    cfg = _build(Config, raw, "", errors, base)
    if cfg is not _MISSING:
        # Values with type errors were left at their defaults, so the cross-field rules
        # can still run and every problem is reported at once.
        cfg = _resolve_defaults(dataclasses.replace(cfg, path=Path(file)), base, raw)
        _validate(cfg, errors)
    if errors.items:
        raise ConfigError(errors.items)
    return cfg


def load_config(path: str | Path, sections: Collection[str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: (file): cannot read: {e.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: (file): not UTF-8 text"]) from None
    return parse_config(text, str(path), path.resolve().parent, sections)
