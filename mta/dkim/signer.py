"""DKIM signing per sender domain: which domain signs a message, with which keys, when.

The signing domain (d=) comes from the From header's domain: the [dkim] section of that
exact domain, else of the nearest parent domain that has `subdomains = true`. The server's
own DSNs (From: MAILER-DAEMON@[server] hostname) are signed by the domain with
`sign_dsn = true`. Each domain adds one signature per configured algorithm; with rotation,
`next_*` keys sign from `switch_at` on (the clock is the caller's `now`).

Every key is read and parsed once, in `DkimSigner.from_config`; a key that cannot be used
is a configuration error (`FILE: dkim."example.com".key: problem`), so the server refuses
to start rather than send unsigned mail.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dkim
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError

from mta.config import Config, DkimDomainConfig
from mta.dkim._dkimpy import DkimpySigner
from mta.dkim.keys import ALGORITHMS, ED25519, RSA, DkimKeyError, SigningKey, load_private_key
from mta.rfc5322 import from_fields, mailbox_addresses

__all__ = ["DkimConfigError", "DkimSignError", "DkimSigner", "sign_async", "validate"]


class DkimConfigError(Exception):
    """Every problem with [dkim], each as `FILE: dkim."example.com".key: problem`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class DkimSignError(Exception):
    """dkimpy could not parse the message (e.g. a malformed header line)."""


@dataclass(frozen=True)
class Signature:
    """One DKIM-Signature to add: selector and key (for one algorithm)."""

    selector: str
    key: SigningKey


@dataclass(frozen=True)
class DomainSigning:
    """Everything needed to sign for one d= domain, resolved from its [dkim] section."""

    domain: str  # A-label, lower case, no trailing dot
    current: tuple[Signature, ...]
    next: tuple[Signature, ...]  # empty: no rotation scheduled
    switch_at: float | None
    headers: frozenset[bytes]  # lower-case names signed when present
    oversign: tuple[bytes, ...]  # lower-case names signed one extra time
    canon: CanonicalizationPolicy
    subdomains: bool

    def signatures_at(self, now: float) -> tuple[Signature, ...]:
        if self.switch_at is not None and now >= self.switch_at and self.next:
            return self.next
        return self.current


# Per algorithm: the config fields for (selector, key) now and after the switch.
_FIELDS = {
    RSA: (("selector", "key"), ("next_selector", "next_key")),
    ED25519: (("ed25519_selector", "ed25519_key"),
              ("next_ed25519_selector", "next_ed25519_key")),
}
_SELECTOR_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
                          r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*$")
_HEADER_NAME_RE = re.compile(r"^[\x21-\x39\x3b-\x7e]+$")  # RFC 5322 2.2 ftext


def _normalize_domain(name: str) -> str:
    """Lower case, no trailing dot, IDNA A-label (d= must match DNS names)."""
    name = name.strip().rstrip(".").lower()
    if name.isascii():
        return name
    return name.encode("idna").decode("ascii")


class DkimSigner:
    """Signs messages for the configured domains. Build with `from_config`."""

    def __init__(self, domains: Mapping[str, DomainSigning],
                 dsn_address: str = "", dsn_domain: DomainSigning | None = None) -> None:
        self._domains = dict(domains)
        self.pool: Any = None  # a mta.dkim.pool.SignPool when RSA signs in processes
        self._dsn_address = dsn_address.lower()
        self._dsn_domain = dsn_domain

    @classmethod
    def from_config(cls, dkim_cfg: Mapping[str, DkimDomainConfig], *, hostname: str = "",
                    file: str = "config.toml") -> DkimSigner:
        """Load every key (reads the disk: call at start-up and on reload, off the loop
        if the loop is running). Raises DkimConfigError listing every problem."""
        errors: list[str] = []
        loaded: dict[tuple[Path, str], SigningKey] = {}  # a key file shared by domains
        domains: dict[str, DomainSigning] = {}
        dsn: list[DomainSigning] = []
        for name, dc in dkim_cfg.items():
            prefix = f'dkim."{name}"'

            def err(key: str, problem: str, prefix: str = prefix) -> None:
                errors.append(f"{file}: {prefix}{'.' + key if key else ''}: {problem}")

            d = _build_domain(name, dc, err, loaded)
            if d is None:
                continue
            if d.domain in domains:
                err("", f"the same domain as another [dkim] section ({d.domain})")
                continue
            domains[d.domain] = d
            if dc.sign_dsn:
                dsn.append(d)
        if len(dsn) > 1:
            errors.append(f"{file}: dkim: sign_dsn is set for more than one domain ("
                          + ", ".join(d.domain for d in dsn) + ")")
        if dsn and not hostname:
            errors.append(f"{file}: server.hostname: needed to sign DSNs (dkim sign_dsn)")
        if errors:
            raise DkimConfigError(errors)
        return cls(domains, f"mailer-daemon@{hostname}" if dsn else "",
                   dsn[0] if dsn else None)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self._domains)

    def domain_signing(self, domain: str) -> DomainSigning | None:
        """The [dkim] section that signs mail From: this domain (exact, else the nearest
        parent with subdomains = true), or None."""
        domain = domain.rstrip(".").lower()
        d = self._domains.get(domain)
        if d is not None:
            return d
        while "." in domain:
            domain = domain.split(".", 1)[1]
            d = self._domains.get(domain)
            if d is not None and d.subdomains:
                return d
        return None

    def _signing_for(self, head: bytes) -> DomainSigning | None:
        addr = _from_address(head)
        if addr is None:
            return None
        if self._dsn_domain is not None and addr == self._dsn_address:
            return self._dsn_domain
        _, _, domain = addr.rpartition("@")
        if not domain:
            return None
        try:
            domain = _normalize_domain(domain)
        except UnicodeError:
            return None
        return self.domain_signing(domain)

    def match(self, message: bytes) -> DomainSigning | None:
        """The domain that signs this message (by its From), or None. Cheap: reads only
        the header block, so it can run on the event loop."""
        if not self._domains:
            return None
        head_end = message.find(b"\r\n\r\n")
        if head_end < 0:
            head_end = message.find(b"\n\n")
        return self._signing_for(message if head_end < 0 else message[:head_end + 2])

    def sign(self, message: bytes, now: float) -> bytes:
        """The message with DKIM-Signature header(s) prepended; unchanged if no configured
        domain matches its From (or it has no single From). CPU-bound: see sign_async."""
        d = self.match(message)
        return message if d is None else self.sign_as(d, message, now)

    def sign_as(self, d: DomainSigning, message: bytes, now: float) -> bytes:
        """Sign for `d` (from `match`), with the keys valid at `now` (POSIX seconds, also
        the t= tag). Raises DkimSignError if dkimpy cannot parse the header block."""
        return self.signature_headers(d, message, now) + message

    def signature_headers(self, d: DomainSigning, message: bytes, now: float) -> bytes:
        """The DKIM-Signature header line(s) `sign_as` prepends (what a worker returns)."""
        linesep = b"\r\n" if b"\r\n" in message[:4096] else b"\n"
        try:
            m = DkimpySigner(message, linesep=linesep)
            present = [name.lower() for name, _ in m.headers if name.lower() in d.headers]
            include = (*present, *d.oversign)
            domain = d.domain.encode("ascii")
            out = [m.sign_with(s.key, s.selector.encode("ascii"), domain, d.canon, include,
                               now)
                   for s in d.signatures_at(now)]
        except (dkim.DKIMException, IndexError) as e:
            # IndexError: dkimpy's parser on a message whose first line is a continuation.
            raise DkimSignError(str(e) or "malformed header block") from e
        return b"".join(out)


async def sign_async(signer: DkimSigner, message: bytes, now: float,
                     executor: Executor | None = None) -> bytes:
    """`signer.sign` without holding up the event loop: the From match runs here, the
    signing in `executor` (default: the loop's default thread pool).

    Why a thread (measured with bench/dkim_sign.py on the 2-core dev box): an RSA-2048
    signature of a 2 KB message costs ~0.55 ms, ~0.40 ms of it in OpenSSL, which
    `cryptography` runs without the GIL. Inline, the loop thread spent 650-870 us of CPU
    per message; through a thread, 110-145 us (the hop and the GIL-held dkimpy part),
    so the loop stays free for SMTP and the OpenSSL part runs on another core. At
    100 KB: 1,080 vs 145 us. Messages no domain signs skip the thread hop.
    With `signer.pool` (mta.dkim.pool, [signing] workers) RSA signs in a worker process
    instead, and only the header comes back; Ed25519-only mail signs inline (cheap).
    Raises DkimSignError for a header block dkimpy cannot parse.
    """
    d = signer.match(message)
    if d is None:
        return message
    sigs = d.signatures_at(now)
    if all(s.key.algorithm == ED25519 for s in sigs):
        return signer.sign_as(d, message, now)  # ~0.1 ms: less than any hop
    if signer.pool is not None:
        headers = await signer.pool.headers(message, now)
        if headers is not None:
            return headers + message
        # No worker could (one died twice in a row): sign here rather than lose it.
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, signer.sign_as, d, message, now)


def validate(cfg: Config) -> list[str]:
    """`FILE: dkim."example.com".key: problem` lines for check-config / serve."""
    try:
        DkimSigner.from_config(cfg.dkim, hostname=cfg.server.hostname, file=str(cfg.path))
    except DkimConfigError as e:
        return e.errors
    return []


# --- helpers ---------------------------------------------------------------------------

def _from_address(head: bytes) -> str | None:
    """The single From header's first address, lower case; None if there isn't exactly one
    From (RFC 5322 3.6: exactly one; DMARC receivers reject the others anyway)."""
    found = from_fields(head)
    if len(found) != 1:
        return None
    addrs = mailbox_addresses(found[0])
    if not addrs or "@" not in addrs[0]:
        return None
    return addrs[0].lower()


def _build_domain(name: str, dc: DkimDomainConfig, err: Callable[[str, str], None],
                  loaded: dict[tuple[Path, str], SigningKey]) -> DomainSigning | None:
    """One [dkim."name"] section -> DomainSigning; problems go to err(key, problem)."""
    ok = True
    try:
        domain = _normalize_domain(name)
    except UnicodeError:
        err("", "not a valid domain name")
        return None
    if "." not in domain or not _SELECTOR_RE.match(domain):
        err("", "not a valid domain name")
        ok = False
    algs = list(dc.algorithms)
    if not algs:
        err("algorithms", "at least one algorithm is required")
        ok = False
    for i, a in enumerate(algs):
        if a not in ALGORITHMS:
            err(f"algorithms[{i}]", f"unknown algorithm {a!r}: expected "
                + " or ".join(ALGORITHMS))
            ok = False
        elif algs.index(a) != i:
            err(f"algorithms[{i}]", f"{a} is listed twice")
            ok = False

    def load(alg: str, sel_f: str, key_f: str, required: str) -> Signature | None:
        """required: the problem to report when neither field is set ('' = optional)."""
        nonlocal ok
        sel, path = getattr(dc, sel_f), getattr(dc, key_f)
        if not sel and path is None:
            if required:
                err(sel_f, required)
                err(key_f, required)
                ok = False
            return None
        if not sel:
            err(sel_f, f"required with {key_f}")
            ok = False
            return None
        if not _SELECTOR_RE.match(sel):
            err(sel_f, f"invalid selector {sel!r}: expected DNS labels (letters, digits, "
                "'-', '_', '.')")
            ok = False
        if path is None:
            err(key_f, f"required with {sel_f}")
            ok = False
            return None
        key = loaded.get((path, alg))
        if key is None:
            try:
                key = loaded[(path, alg)] = load_private_key(path, alg)
            except DkimKeyError as e:
                err(key_f, str(e))
                ok = False
                return None
        return Signature(sel, key)

    current: list[Signature] = []
    nxt: list[Signature] = []
    for alg, ((sel_f, key_f), (nsel_f, nkey_f)) in _FIELDS.items():
        if alg not in algs:
            for f in (sel_f, key_f, nsel_f, nkey_f):
                if getattr(dc, f):
                    err(f, f"set, but {alg} is not in algorithms")
                    ok = False
            continue
        cur = load(alg, sel_f, key_f, f"required for {alg}")
        new = load(alg, nsel_f, nkey_f,
                   f"required for {alg} with switch_at" if dc.switch_at is not None else "")
        if cur is not None:
            current.append(cur)
        if new is not None:
            nxt.append(new)
            if cur is not None and new.selector == cur.selector:
                err(nsel_f, "must differ from the current selector (one DNS record "
                    "holds one key)")
                ok = False
    sels = [s.selector for s in current] + [s.selector for s in nxt]
    if len(set(sels)) != len(sels) and ok:
        err("", "each algorithm needs its own selector (one DNS record holds one key)")
        ok = False
    # Keep the order of `algorithms`: the first listed ends up on top.
    order = {a: i for i, a in enumerate(algs)}
    current.sort(key=lambda s: order.get(s.key.algorithm, 0))
    nxt.sort(key=lambda s: order.get(s.key.algorithm, 0))

    headers = [h.strip().lower() for h in dc.headers]
    oversign = [h.strip().lower() for h in dc.oversign]
    for f, names in (("headers", headers), ("oversign", oversign)):
        for i, h in enumerate(names):
            if not _HEADER_NAME_RE.match(h):
                err(f"{f}[{i}]", f"invalid header name {h!r}")
                ok = False
            elif h.encode() in dkim.DKIM.SHOULD_NOT:
                err(f"{f}[{i}]", f"{h} must not be signed (RFC 6376 5.4.1: it changes "
                    "in transit)")
                ok = False
    if "from" not in headers:
        err("headers", "must include From (RFC 6376 5.4)")
        ok = False
    try:
        canon = CanonicalizationPolicy.from_c_value(dc.canonicalization.encode("ascii"))
    except (InvalidCanonicalizationPolicyError, UnicodeError):
        err("canonicalization", f"invalid {dc.canonicalization!r}: expected header/body "
            "with each simple or relaxed, like \"relaxed/relaxed\"")
        ok = False
    if not ok:
        return None
    return DomainSigning(
        domain=domain, current=tuple(current), next=tuple(nxt), switch_at=dc.switch_at,
        headers=frozenset(h.encode() for h in headers),
        oversign=tuple(h.encode() for h in oversign), canon=canon,
        subdomains=dc.subdomains)
