"""tests/support/system-deps.sh: the suite's Debian packages, checked by capability.

`apt-get install --no-install-recommends swaks` leaves out Net::SSLeay and IO::Socket::SSL,
so a swaks that exists may still be unable to speak TLS; the check must say so instead of
letting the STARTTLS tests fail later (or a missing tool turn into skipped tests).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parent / "support" / "system-deps.sh"


def check(env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["/bin/sh", str(SCRIPT), "--check"], capture_output=True, text=True,
                          timeout=60, env=env)


def test_this_machine_has_every_capability_the_suite_needs():
    proc = check({**os.environ, "PYTHON": sys.executable})
    assert proc.returncode == 0, proc.stderr


def test_a_swaks_that_cannot_speak_tls_is_named_with_the_packages_it_needs(tmp_path):
    # A PATH holding the real tools, except a swaks built like Debian's without its
    # recommended Perl TLS modules (its --support output, word for word).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "grep", "sed", "sort", "tr", "id", "redis-server", "openssl",
                 "systemd-analyze", "systemd-sysusers", "strace", "unshare", "ldns-keygen",
                 "ldns-signzone"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "unbound").symlink_to(shutil.which("unbound", path="/usr/sbin:/usr/bin"))
    (bin_dir / "rspamd").symlink_to(shutil.which("rspamd", path="/usr/sbin:/usr/bin"))
    # The browser and its driver as stubs: the real launcher needs more than this PATH.
    (bin_dir / "chromium").write_text("#!/bin/sh\necho '<html><body><p>ok</p></body></html>'\n")
    (bin_dir / "chromedriver").write_text("#!/bin/sh\necho 'ChromeDriver 1.0'\n")
    for stub in ("chromium", "chromedriver"):
        (bin_dir / stub).chmod(0o755)
    (bin_dir / "swaks").write_text(
        "#!/bin/sh\necho '=== Basic AUTH supported'\n"
        "echo '*** TLS not available: requires Net::SSLeay'\n")
    (bin_dir / "swaks").chmod(0o755)
    proc = check({"PATH": str(bin_dir), "PYTHON": sys.executable})
    assert proc.returncode == 1
    assert proc.stderr == ("the test suite needs these, and this machine lacks them:\n"
                           "  - swaks STARTTLS (from: swaks libnet-ssleay-perl "
                           "libio-socket-ssl-perl)\n")
