"""The one seam into dkimpy: a `dkim.DKIM` subclass that signs with our pre-parsed keys.

dkimpy does the DKIM work: header parsing (`rfc822_parse`), simple canonicalization,
header selection (`select_headers`), the tag list and its folding (`fold`, `RE_BTAG`);
canon.py holds byte-identical fast twins of its message split and relaxed
canonicalization. Two steps do not fit a server and change:

- `DKIM.sign()` takes the key as PEM bytes and parses it (pure-Python ASN.1) on every
  call, and stamps t= from `time.time()`. `sign_with()` takes a key parsed once at
  start-up and the time from the caller (so rotation and t= agree, and tests set both).
- `DKIM.gen_header()` signs RSA with dkimpy's pure-Python `RSASSA_PKCS1_v1_5_sign`
  (~120 signatures/s for 2048 bits). The override is dkimpy 1.1's `gen_header` (with its
  `hash_headers` inlined) where that call is `key.sign_digest(digest)`: OpenSSL through
  `cryptography`, which also releases the GIL while it signs.

Overriding methods in a subclass keeps dkimpy's module globals untouched for any other
user in the process. Written against dkimpy 1.1.x; tests/dkim checks that the output is
byte-for-byte what stock dkimpy produces for the same key and time, so a dkimpy upgrade
that changes either method fails there.
"""

from __future__ import annotations

import base64

import dkim
from dkim import HASH_ALGORITHMS, fold, select_headers
from dkim.canonicalization import CanonicalizationPolicy

from mta.dkim.canon import canonicalize_body, canonicalize_headers, split_message
from mta.dkim.keys import SigningKey


class DkimpySigner(dkim.DKIM):
    """One message, parsed once, signed by one or more keys."""

    def __init__(self, message: bytes, linesep: bytes = b"\r\n") -> None:
        super().__init__(None, linesep=linesep)
        # canon.split_message: rfc822_parse's result without re-splitting the body.
        self.headers, self.body = split_message(message)
        self._body_hashes: dict[bytes, bytes] = {}
        self._canon_headers: dict[tuple[bytes, tuple[bytes, ...]], list] = {}

    def sign_with(self, key: SigningKey, selector: bytes, domain: bytes,
                  canon: CanonicalizationPolicy, include_headers: tuple[bytes, ...],
                  now: float) -> bytes:
        """One `DKIM-Signature: ...` header line (with linesep), as `DKIM.sign()` builds it.

        include_headers: lower-case names, already checked (From present, nothing from
        dkimpy's should-not-sign list) when the configuration was loaded.
        """
        algorithm = key.algorithm.encode("ascii")
        self.signature_algorithm = algorithm
        self.hasher = HASH_ALGORITHMS[algorithm]
        self.include_headers = include_headers
        c_value = canon.to_c_value()
        bodyhash = self._body_hashes.get(c_value)
        if bodyhash is None:
            # Both algorithms hash the body with SHA-256: a dual signature hashes it once.
            h = self.hasher()
            h.update(canonicalize_body(canon, self.body))
            bodyhash = self._body_hashes[c_value] = base64.b64encode(h.digest())
        sigfields = [
            (b"v", b"1"),
            (b"a", algorithm),
            (b"c", c_value),
            (b"d", domain),
            (b"i", b"@" + domain),
            (b"q", b"dns/txt"),
            (b"s", selector),
            (b"t", str(int(now)).encode("ascii")),
            (b"h", b" : ".join(include_headers)),
            (b"bh", bodyhash),
            # As dkimpy: a placeholder that makes b= fold onto its own line.
            (b"b", b"0" * 60),
        ]
        res = self.gen_header(sigfields, include_headers, canon, b"DKIM-Signature", key)
        self.domain = domain
        self.selector = selector
        self.signature_fields = dict(sigfields)
        return b"DKIM-Signature: " + res

    def gen_header(self, fields: list[tuple[bytes, bytes]],
                   include_headers: tuple[bytes, ...], canon_policy: CanonicalizationPolicy,
                   header_name: bytes, pk: SigningKey, standardize: bool = False) -> bytes:
        """dkimpy 1.1 `DKIM.gen_header` for the DKIM-Signature case (standardize=False,
        which is ARC's variant), signing with `pk.sign_digest`."""
        if standardize:
            raise NotImplementedError("ARC headers are not signed through this class")
        header_value = b"; ".join(b"=".join(x) for x in fields)
        header_value = fold(header_value, namelen=len(header_name), linesep=b"\r\n")
        header_value = dkim.RE_BTAG.sub(b"\\1", header_value)
        header = (header_name, b" " + header_value)
        h = self.hasher()
        # dkimpy's hash_headers(), minus its second RE_BTAG pass (header_value is already
        # stripped of b=) and with the fast header canonicalization twin.
        self.signed_headers = select_headers(
            self._canonical_headers(canon_policy, include_headers), include_headers)
        sig_c = canonicalize_headers(canon_policy, [list(header)])
        h.update(b"".join(name + b":" + value for name, value in self.signed_headers))
        h.update(b"".join(name + b":" + value.rstrip() for name, value in sig_c))
        sig2 = pk.sign_digest(h.digest())  # OpenSSL, where dkimpy calls its own RSA
        idx = next(i for i, (tag, _) in enumerate(fields) if tag == b"b")
        fields[idx] = (b"b", base64.b64encode(sig2))
        header_value = b"; ".join(b"=".join(x) for x in fields) + self.linesep
        return fold(header_value, namelen=len(header_name), linesep=self.linesep)

    def _canonical_headers(self, canon: CanonicalizationPolicy,
                           include_headers: tuple[bytes, ...]) -> list:
        """dkimpy canonicalizes every header and then selects the signed ones; selecting
        first gives the same list (names never change case-insensitively) for less work,
        and a dual signature reuses it."""
        key = (canon.to_c_value(), include_headers)
        found = self._canon_headers.get(key)
        if found is None:
            wanted = set(include_headers)
            found = self._canon_headers[key] = canonicalize_headers(
                canon, [h for h in self.headers if h[0].lower() in wanted])
        return found
