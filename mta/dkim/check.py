"""`mta dkim check DOMAIN`: is the public key in DNS the one our private key signs with?

For each selector the domain signs with (each algorithm; with rotation, the current and
the next one) it fetches `selector._domainkey.DOMAIN` TXT and compares the p= key with
the private key's public half. Before `switch_at`, both the current and the next selector
must be published (receivers must find the next key the moment signing switches); after
it, only the next one must be, and the old one is reported for information.
"""

from __future__ import annotations

import base64
import binascii
import sys
import time
from typing import TextIO

from cryptography.hazmat.primitives import serialization
from dkim.util import InvalidTagValueList, parse_tag_value

from mta.config import Config
from mta.dkim.dnstxt import DkimDnsError, TxtLookup
from mta.dkim.keys import SigningKey
from mta.dkim.signer import DkimConfigError, DkimSigner, Signature

__all__ = ["check_main", "check_record"]


def check_record(txt: bytes, key: SigningKey) -> str | None:
    """None if the TXT record publishes `key`'s public half, else what is wrong."""
    try:
        tags = parse_tag_value(txt)
    except InvalidTagValueList as e:
        return f"not a DKIM key record ({e})"
    if tags.get(b"v", b"DKIM1") != b"DKIM1":
        return f"v={tags[b'v'].decode(errors='replace')}, expected DKIM1"
    if b"v" in tags and next(iter(tags)) != b"v":
        return "v=DKIM1 must be the first tag (RFC 6376 3.6.1)"
    k = tags.get(b"k", b"rsa").decode(errors="replace")
    if k != key.k_tag:
        return f"k={k}, but the private key is {key.k_tag}"
    h = tags.get(b"h")
    if h is not None and b"sha256" not in [x.strip() for x in h.split(b":")]:
        return f"h={h.decode(errors='replace')} does not allow sha256"
    s = tags.get(b"s")
    if s is not None and not {b"*", b"email"} & {x.strip() for x in s.split(b":")}:
        return f"s={s.decode(errors='replace')} does not allow email"
    p = b"".join(tags.get(b"p", b"").split())
    if not p:
        return "p= is empty: the key is revoked (RFC 6376 3.6.1)"
    if _same_key(p, key):
        return None
    return "p= is a different key than the private key"


def _same_key(p: bytes, key: SigningKey) -> bool:
    mine = key.public_p().encode("ascii")
    if p == mine:
        return True
    if key.k_tag != "rsa":
        return False
    # RSA: the record may hold PKCS#1 RSAPublicKey instead of SubjectPublicKeyInfo.
    try:
        der = base64.b64decode(p, validate=True)
        theirs = serialization.load_der_public_key(der)
    except (binascii.Error, ValueError):
        return False
    ours = serialization.load_der_public_key(base64.b64decode(mine))
    return theirs.public_numbers() == ours.public_numbers()  # type: ignore[union-attr]


def check_main(domain: str, cfg: Config, resolver_nameservers: list[str], *,
               now: float | None = None, timeout: float = 5.0,
               out: TextIO | None = None) -> int:
    """Exit 0 if every selector that must be published matches, 1 otherwise."""
    out = out or sys.stdout
    now = time.time() if now is None else now
    want = domain.strip().rstrip(".").lower()
    section = {n: c for n, c in cfg.dkim.items() if n.strip().rstrip(".").lower() == want}
    if not section:
        print(f"{domain}: no [dkim.\"{want}\"] section in {cfg.path}", file=out)
        return 1
    try:
        signer = DkimSigner.from_config(section, hostname=cfg.server.hostname,
                                        file=str(cfg.path))
    except DkimConfigError as e:
        print("\n".join(e.errors), file=out)
        return 1
    d = signer.domain_signing(signer.domains[0])
    assert d is not None
    lookup = TxtLookup(resolver_nameservers, timeout)
    switched = d.switch_at is not None and now >= d.switch_at and bool(d.next)
    todo: list[tuple[Signature, bool, str]] = []
    for s in d.current:
        todo.append((s, not switched, "retired at switch_at" if switched else "current"))
    for s in d.next:
        todo.append((s, True, "current since switch_at" if switched else
                     "next" + (" (switch_at set)" if d.switch_at is not None else "")))
    ok = True
    for sig, required, role in todo:
        name = f"{sig.selector}._domainkey.{d.domain}"
        try:
            records = lookup.records(name)
        except DkimDnsError as e:
            problem: str | None = f"DNS lookup failed: {e}"
        else:
            if not records:
                problem = "no TXT record published"
            elif len(records) > 1:
                problem = f"{len(records)} TXT records: receivers may pick any one"
            else:
                problem = check_record(records[0], sig.key)
        if problem is None:
            print(f"ok    {name} ({sig.key.algorithm}, {role}): published key matches",
                  file=out)
        elif required:
            ok = False
            print(f"FAIL  {name} ({sig.key.algorithm}, {role}): {problem}", file=out)
        else:
            print(f"info  {name} ({sig.key.algorithm}, {role}): {problem}", file=out)
    return 0 if ok else 1
