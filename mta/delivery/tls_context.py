"""The delivery client's TLS: its contexts (opportunistic, RFC 7435, built once; verifying,
one per CA file), what a failed handshake means for TLS reporting (RFC 8460 4.3 result
types) and the chain a server presented (for DANE, mta.tls.dane)."""

from __future__ import annotations

import functools
import ssl

__all__ = ["handshake_result_type", "opportunistic_context", "peer_chain",
           "verifying_context"]


# OpenSSL's X509_V_ERR_* codes -> RFC 8460 4.3 result types.
_VERIFY_RESULT = {62: "certificate-host-mismatch", 10: "certificate-expired",
                  2: "certificate-not-trusted", 18: "certificate-not-trusted",
                  19: "certificate-not-trusted", 20: "certificate-not-trusted",
                  21: "certificate-not-trusted"}


def handshake_result_type(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return _VERIFY_RESULT.get(error.verify_code, "validation-failure")
    return "validation-failure"


def peer_chain(ssl_object: ssl.SSLObject) -> list[bytes]:
    """The chain the server presented (DER, leaf first), unverified. Public from Python
    3.13 (SSLObject.get_unverified_chain); before, the same call on the private _sslobj,
    whose items are _ssl.Certificate objects."""
    public = getattr(ssl_object, "get_unverified_chain", None)
    chain = public() if public is not None else \
        ssl_object._sslobj.get_unverified_chain()  # type: ignore[attr-defined]
    return [c if isinstance(c, bytes) else c.public_bytes(ssl._ssl.ENCODING_DER)  # type: ignore[attr-defined]
            for c in chain or ()]


_tls_context: ssl.SSLContext | None = None


def opportunistic_context() -> ssl.SSLContext:
    """Opportunistic TLS (RFC 7435): encrypt, don't authenticate. Built once: costly."""
    global _tls_context
    if _tls_context is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _tls_context = ctx
    return _tls_context


@functools.cache
def verifying_context(ca_file: str) -> ssl.SSLContext:
    """tls = "verify": the chain must reach `ca_file` (or the system's CAs) and the
    certificate must name the MX host (RFC 6125 via OpenSSL). One per CA file."""
    return ssl.create_default_context(cafile=ca_file or None)
