"""DKIM signing per sender domain (dkimpy, RSA through OpenSSL) and key management.

Public surface:
- `DkimSigner.from_config(cfg.dkim, hostname=..., file=...)`, `.sign(message, now)`
- `sign_async(signer, message, now)`: the same off the event loop
- `validate(cfg) -> list[str]`: `FILE: dkim."example.com".key: problem` lines
- `keygen_main(...)`, `check_main(...)`: the `mta dkim keygen|check` commands
- `txt_lookup(nameservers)`: a dkimpy `dnsfunc` backed by dnspython
"""

from mta.dkim.check import check_main
from mta.dkim.dnstxt import txt_lookup
from mta.dkim.keys import DkimKeyError, keygen_main, load_private_key, txt_record
from mta.dkim.signer import DkimConfigError, DkimSigner, DkimSignError, sign_async, validate

__all__ = [
    "DkimConfigError",
    "DkimKeyError",
    "DkimSignError",
    "DkimSigner",
    "check_main",
    "keygen_main",
    "load_private_key",
    "sign_async",
    "txt_lookup",
    "txt_record",
    "validate",
]
