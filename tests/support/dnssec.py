"""DNSSEC-signed test zones, made with Debian's ldns tools (package ldnsutils), for the
test Unbound (tests/support/dnsserver.py) to serve and validate:

    zone = sign_zone("dane.test", '''
        @              MX   10 mx
        mx             A    127.0.0.2
        _25._tcp.mx    TLSA 3 1 1 ab12...
    ''', tmp_path, bogus=["_25._tcp.mx.dane.test"])
    srv = dns_server_factory({"plain.test": "..."}, signed=[zone])

`ldns-keygen` makes one ECDSA P-256 key (algorithm 13: fast, and small answers), used as
both KSK and ZSK; `ldns-signzone` signs the zone with it (NSEC; signatures valid from now
for four weeks, ldns's default). `trust_anchor` is the key's DNSKEY record: configured in
Unbound as the trust anchor of the zone, so the zone validates without any delegation
from the root. Names in `bogus` get their TLSA data altered AFTER signing: their RRSIG no
longer matches, so a validating resolver answers them SERVFAIL ("bogus"), while the rest
of the zone stays secure.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SignedZone", "sign_zone"]


@dataclass(frozen=True)
class SignedZone:
    origin: str  # "dane.test." (absolute)
    path: Path  # the signed zone file
    trust_anchor: str  # "dane.test. IN DNSKEY 257 3 13 ..."


def _tool(name: str) -> str:
    binary = shutil.which(name)
    if binary is None:
        raise RuntimeError(f"{name} is not installed (Debian: apt-get install ldnsutils)")
    return binary


def sign_zone(origin: str, text: str, directory: Path, *,
              bogus: Iterable[str] = ()) -> SignedZone:
    from tests.support.dnsserver import render_zone  # the same zone text rules

    origin = origin.strip().rstrip(".").lower() + "."
    work = Path(directory) / f"signed-{origin.rstrip('.')}"
    work.mkdir(parents=True, exist_ok=True)
    unsigned = work / "zone.txt"
    unsigned.write_text(render_zone(origin, text))
    # -k: a key signing key (flags 257), the one a trust anchor names.
    base = subprocess.run(
        [_tool("ldns-keygen"), "-a", "ECDSAP256SHA256", "-k", origin], cwd=work,
        check=True, capture_output=True, text=True).stdout.strip()
    signed = work / "zone.signed"
    subprocess.run([_tool("ldns-signzone"), "-f", str(signed), str(unsigned), base],
                   cwd=work, check=True, capture_output=True, text=True)
    _break(signed, {n.strip().rstrip(".").lower() + "." for n in bogus})
    anchor = (work / f"{base}.key").read_text().strip()
    return SignedZone(origin, signed, anchor)


def _break(path: Path, names: set[str]) -> None:
    """Flip a bit of the TLSA data of `names`, leaving their signatures as they were."""
    if not names:
        return
    lines = path.read_text().splitlines()
    changed = 0
    for i, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 8 and fields[0].lower() in names and fields[3] == "TLSA":
            last = fields[-1]
            fields[-1] = last[:-1] + ("0" if last[-1] != "0" else "1")
            lines[i] = "\t".join(fields)
            changed += 1
    if changed < len(names):
        raise ValueError(f"no TLSA record to make bogus at some of {sorted(names)}")
    path.write_text("\n".join(lines) + "\n")
