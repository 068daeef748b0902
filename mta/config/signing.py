"""[signing]: how DKIM signatures are computed (mta/dkim/pool.py). Its own section because
[dkim] holds only per-domain tables ([dkim."example.com"])."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class SigningConfig:
    # Processes that compute RSA signatures, each holding the keys loaded once. The loop
    # hands over the message and gets the DKIM-Signature header back, so RSA and dkimpy's
    # GIL-held parsing run on the other cores. 0: sign in a thread of this process (the
    # RSA math releases the GIL, dkimpy's part does not). Ed25519-only mail is always
    # signed in the process: cheaper than the hop.
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError("workers must be 0 (sign in-process) or more")
