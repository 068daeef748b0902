"""A real rspamd (Debian package `rspamd`) on a free loopback port, for the content tests.

It runs in the foreground (`-f`) with a minimal configuration written to a temporary
directory: one normal worker (the /checkv2 protocol), no controller, no Redis, none of the
stock modules (they would look things up on the network), DNS pointed at a closed loopback
port, and a tiny TLD list (the stock one takes seconds to compile). Its only rules are
three Lua symbols keyed on the Subject, so a test chooses rspamd's answer:

    "RSPAMD-REJECT"  score 20 -> action "reject"       (reject threshold 15)
    "RSPAMD-HEADER"  score 7  -> action "add header"   (add_header threshold 6)
    "RSPAMD-SOFT"    pre-result "soft reject"
    anything else             -> "no action"

As root rspamd refuses to run its workers without `-u`/`-g` unless told `-i` (insecure):
the workers then stay root, which is what a throwaway test instance on loopback may do.
Readiness is waited for with GET /ping, never by sleeping a fixed time.

Fixture: `rspamd_server` (one per session): `.url` ("http://127.0.0.1:PORT"), `.stop()`,
`.start()` (an outage and the recovery from it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import free_port, stop_process

__all__ = ["RspamdServer", "rspamd_server"]

RSPAMD = shutil.which("rspamd", path="/usr/bin:/usr/sbin") or "/usr/bin/rspamd"

_CONF = """
options {{
  pidfile = "{dir}/rspamd.pid";
  dbdir = "{dir}/db";
  hs_cache_dir = "{dir}/db";
  url_tld = "{dir}/tld.dat";
  filters = "";
  dns {{ nameserver = ["127.0.0.1:{dead_port}"]; timeout = 1s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{dir}/rspamd.log"; level = "notice"; }}
actions {{ reject = 15; add_header = 6; }}
lua = "{dir}/rules.lua";
worker "normal" {{
  bind_socket = "127.0.0.1:{port}";
  count = 1;
  task_timeout = 20s;
}}
"""

_RULES = """
local function subject(task)
  return task:get_header('Subject') or ''
end
rspamd_config:register_symbol({name = 'MTA_TEST_REJECT', score = 20.0,
  callback = function(task) return string.find(subject(task), 'RSPAMD-REJECT', 1, true) ~= nil end})
rspamd_config:register_symbol({name = 'MTA_TEST_HEADER', score = 7.0,
  callback = function(task) return string.find(subject(task), 'RSPAMD-HEADER', 1, true) ~= nil end})
rspamd_config:register_symbol({name = 'MTA_TEST_SOFT', type = 'prefilter', priority = 10,
  callback = function(task)
    if string.find(subject(task), 'RSPAMD-SOFT', 1, true) then
      task:set_pre_result('soft reject', 'try again later', 'MTA_TEST_SOFT')
    end
  end})
"""


class RspamdServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        (directory / "db").mkdir(parents=True, exist_ok=True)
        (directory / "tmp").mkdir(exist_ok=True)
        (directory / "tld.dat").write_text("test\nexample\ncom\n")
        (directory / "rules.lua").write_text(_RULES)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _ping(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> RspamdServer:
        (self.dir / "rspamd.conf").write_text(_CONF.format(
            dir=self.dir, port=self.port, dead_port=free_port()))
        log = open(self.dir / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            [RSPAMD, "-f", "-i", "-c", str(self.dir / "rspamd.conf")],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
            env={**os.environ, "TMPDIR": str(self.dir / "tmp")})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rspamd exited with {self.proc.returncode}: "
                                   f"{self._logs()}")
            if self._ping():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"rspamd did not answer /ping within {timeout}s: {self._logs()}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=10)
            self.proc = None

    def _logs(self) -> str:
        out = []
        for name in ("stderr.log", "rspamd.log"):
            p = self.dir / name
            if p.exists():
                out.append(p.read_text(errors="replace")[-3000:])
        return "\n".join(out)


@pytest.fixture(scope="session")
def rspamd_server(tmp_path_factory) -> Iterator[RspamdServer]:
    server = RspamdServer(tmp_path_factory.mktemp("rspamd"))
    try:
        yield server.start()
    finally:
        server.stop()
