"""A real DNS server for tests: Unbound (Debian package `unbound`) on 127.0.0.1, serving
test zones given as RFC 1035 zone text, on a free UDP+TCP port.

    srv = dns_server_factory({"example.test": '''
        @      MX 10 mx1
        @      MX 20 mx2
        mx1    A    127.0.0.2
        mx2    AAAA ::1
        s1._domainkey TXT ''' + txt("v=DKIM1; k=rsa; p=" + key) + '''
    '''})
    cfg = parse_config(f'[dns]\\nnameservers = ["{srv.nameserver}"]\\n')
    srv.set_zones({...})   # replace the zones; returns once the new ones are served

Zones are served authoritatively (Unbound `auth-zone`), so answers carry the zone's TTLs,
NXDOMAIN and NODATA carry its SOA (one is added when the text has none: negative TTL 60s),
and records are exactly the zone's: null MX ("0 ."), TXT made of several 255-byte
strings, CNAMEs. Two zones are always there for failure paths:
- `timeout.test`: every query for it or under it is dropped (`local-zone ... deny`),
  so the client times out;
- `servfail.test`: answered SERVFAIL (an authoritative zone with no data loaded).
Any other name outside the zones is REFUSED: nothing is ever forwarded or looked up
elsewhere, no root hints are used and /etc/resolv.conf is never read.

DNSSEC: `signed=[tests.support.dnssec.sign_zone(...)]` adds zones Unbound validates, for
DANE. They are auth-zones "for-upstream" only: the iterator takes the zone file as the
authoritative server's answers and the validator module checks them against the zone's
key, configured as a trust anchor at the apex (no chain from the root needed), exactly as
it checks answers from the Internet: AD on secure answers, SERVFAIL on bogus ones. The
unsigned zones stay "for-downstream" (answered as they are, never validated, never AD),
so one server holds secure, insecure and bogus names. The validator is only loaded when
there is a signed zone (it costs nothing, but keeps the other tests as they were).

Start-up waits for readiness by querying (a generation counter in a TXT record), never
by sleeping, and takes well under a second. Fixture: `dns_server_factory`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest

from mta.dns.zone import parse_zone
from tests.support.daemon import stop_process
from tests.support.dnssec import SignedZone

__all__ = [
    "SERVFAIL_ZONE",
    "TIMEOUT_ZONE",
    "DnsServer",
    "DnsServerError",
    "DnsServerFactory",
    "dns_server_factory",
    "txt",
]

TIMEOUT_ZONE = "timeout.test"
SERVFAIL_ZONE = "servfail.test"
_READY_NAME = "ready.dnsserver.internal."
_START_TIMEOUT = 10.0  # seconds; start-up takes ~0.1s, the rest is for a loaded machine
# Negative TTL of the SOA added to zones without one: short, so tests that change DNS
# are not stuck behind a cached NXDOMAIN, long enough to observe negative caching.
_DEFAULT_SOA = "@ 300 IN SOA ns.dnsserver.internal. hostmaster.dnsserver.internal. " \
               "1 3600 600 86400 60"


class DnsServerError(RuntimeError):
    pass


def txt(value: str) -> str:
    """A TXT record's data as quoted strings of at most 255 octets (RFC 1035 3.3.14), the
    way DKIM keys longer than 255 characters are published."""
    raw = value.encode()
    chunks = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join('"' + c.decode().replace("\\", "\\\\").replace('"', '\\"') + '"'
                    for c in chunks)


def _absolute(origin: str) -> str:
    return origin.strip().rstrip(".").lower() + "."


def render_zone(origin: str, text: str) -> str:
    """Zone text (as mta.dns.zone.parse_zone takes it: relative names, indentation, no
    SOA are fine) -> a complete zone file with absolute names; a syntax error raises
    DnsServerError naming the zone."""
    origin = _absolute(origin)
    try:
        zone = parse_zone(origin, text)
        if zone.get_rdataset(zone.origin, dns.rdatatype.SOA) is None:
            soa = dns.zone.from_text(_DEFAULT_SOA, origin=origin, relativize=False,
                                     check_origin=False)
            node = zone.find_node(zone.origin, create=True)
            node.replace_rdataset(soa.find_rdataset(zone.origin, dns.rdatatype.SOA))
    except dns.exception.DNSException as e:
        raise DnsServerError(f"zone {origin}: {e}") from None
    return zone.to_text(relativize=False)


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now (Unbound binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise DnsServerError("no free UDP+TCP port on 127.0.0.1")


class DnsServer:
    """One Unbound process serving `zones` ({origin: zone text}) from `workdir`."""

    address = "127.0.0.1"

    def __init__(self, zones: Mapping[str, str], workdir: Path, *,
                 timeout_zones: Iterable[str] = (TIMEOUT_ZONE,),
                 servfail_zones: Iterable[str] = (SERVFAIL_ZONE,),
                 log_queries: bool = False, signed: Iterable[SignedZone] = ()) -> None:
        self.workdir = Path(workdir)
        # Every query received goes to the log (Unbound `log-queries`), for
        # `queries_seen`; off by default: other tests need no log written per query.
        self.log_queries = log_queries
        self.zones = dict(zones)
        self.signed = list(signed)
        self.timeout_zones = [_absolute(z) for z in timeout_zones]
        self.servfail_zones = [_absolute(z) for z in servfail_zones]
        self.port = 0
        self.generation = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "unbound.log"

    @property
    def nameserver(self) -> str:
        """"127.0.0.1:PORT", the form `[dns] nameservers` takes."""
        return f"{self.address}:{self.port}"

    # --- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        binary = shutil.which("unbound") or shutil.which("unbound", path="/usr/sbin")
        if binary is None:
            raise DnsServerError("unbound is not installed (Debian: apt-get install unbound)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(5):  # another test may take the port between probe and bind
            self.port = _free_port()
            self.generation += 1
            self._write_files()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    [binary, "-d", "-c", str(self.workdir / "unbound.conf")],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self.workdir)
            try:
                self._wait_ready()
                return
            except DnsServerError as e:
                last_error = str(e)
                self._kill()
                if "already in use" not in last_error:
                    break
        raise DnsServerError(last_error)

    def stop(self) -> None:
        self._kill()

    def set_zones(self, zones: Mapping[str, str],
                  signed: Iterable[SignedZone] | None = None) -> None:
        """Replace every zone (and the signed ones, when given) and reload (SIGHUP);
        returns once the new zones are served."""
        if self.proc is None or self.proc.poll() is not None:
            raise DnsServerError("the DNS server is not running")
        self.zones = dict(zones)
        if signed is not None:
            self.signed = list(signed)
        self.generation += 1
        self._write_files()
        self.proc.send_signal(signal.SIGHUP)
        self._wait_ready()

    def queries_seen(self, name: str, rdtype: str) -> int:
        """How many queries for (name, type) the server has received (needs
        log_queries=True). Unbound writes each line as it logs it, so a query whose
        answer has arrived is already counted."""
        if not self.log_queries:
            raise DnsServerError("queries_seen needs DnsServer(..., log_queries=True)")
        want = f" {_absolute(name)} {rdtype.upper()} IN"
        with contextlib.suppress(OSError):
            return sum(1 for line in self.log_path.read_text(errors="replace").splitlines()
                       if "info: " in line and line.endswith(want))
        return 0

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- internals ---------------------------------------------------------------------

    def _kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-2000:]
        return ""

    def _wait_ready(self) -> None:
        """Poll the generation TXT record until this generation is served."""
        want = (f"gen-{self.generation}".encode(),)
        deadline = time.monotonic() + _START_TIMEOUT
        query = dns.message.make_query(_READY_NAME, "TXT")
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise DnsServerError(f"unbound exited:\n{self._log_tail()}")
            try:
                response = dns.query.udp(query, self.address, port=self.port, timeout=0.1)
                if any(rd.strings == want for rrset in response.answer for rd in rrset):
                    return
            except (dns.exception.Timeout, OSError):
                pass
            time.sleep(0.005)
        raise DnsServerError(f"unbound not ready after {_START_TIMEOUT}s:\n{self._log_tail()}")

    def _write_files(self) -> None:
        served: dict[str, str] = {}  # zone origin -> file name
        for i, (origin, text) in enumerate(sorted(self.zones.items())):
            name = f"zone{i}.txt"
            (self.workdir / name).write_text(render_zone(origin, text))
            served[_absolute(origin)] = name
        for origin in self.servfail_zones:
            (self.workdir / "empty.zone").write_text("")
            served.setdefault(origin, "empty.zone")
        signed: dict[str, str] = {}
        for i, zone in enumerate(self.signed):
            name = f"signed{i}.zone"
            shutil.copyfile(zone.path, self.workdir / name)
            signed[zone.origin] = name
        (self.workdir / "anchors.txt").write_text(
            "".join(z.trust_anchor + "\n" for z in self.signed))
        (self.workdir / "unbound.conf").write_text(self._config(served, signed))

    def _config(self, served: dict[str, str], signed: dict[str, str] | None = None) -> str:
        signed = signed or {}
        # local-zone types by name: configured zones pass through to the auth-zones
        # (transparent); their ancestors lose Unbound's built-in RFC 6761 zones (test.,
        # invalid., localhost., ...), which would otherwise answer NXDOMAIN first.
        local: dict[str, str] = {}
        for origin in [*served, *signed, *self.timeout_zones]:
            labels = origin.rstrip(".").split(".")
            for i in range(1, len(labels)):
                local.setdefault(".".join(labels[i:]) + ".", "nodefault")
        for origin in [*served, *signed]:
            local[origin] = "transparent"
        for origin in self.timeout_zones:
            local[origin] = "deny"  # drop the query: the client times out
        lines = [
            "server:",
            f"  interface: {self.address}@{self.port}",
            "  do-ip4: yes",
            "  do-ip6: no",
            "  do-udp: yes",
            "  do-tcp: yes",
            "  do-daemonize: no",
            '  chroot: ""',
            '  username: ""',
            f'  directory: "{self.workdir}"',
            '  pidfile: ""',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            f"  log-queries: {'yes' if self.log_queries else 'no'}",
            "  num-threads: 1",
            "  so-reuseport: no",
            # The validator only for signed zones (see the module's docstring).
            '  module-config: "validator iterator"' if signed else
            '  module-config: "iterator"',
            *([f'  trust-anchor-file: "{self.workdir / "anchors.txt"}"',
               # RFC 8914 extended errors name a bogus answer's reason (in the reply).
               "  val-log-level: 2", "  ede: yes"] if signed else []),
            "  access-control: 127.0.0.0/8 allow",
            # Nothing outside the test zones is answered or looked up anywhere.
            '  local-zone: "." refuse',
            '  local-zone: "dnsserver.internal." static',
            f'  local-data: "{_READY_NAME} 0 IN TXT gen-{self.generation}"',
        ]
        lines += [f'  local-zone: "{name}" {kind}' for name, kind in sorted(local.items())]
        for origin, file in sorted(served.items()):
            lines += ["auth-zone:", f'  name: "{origin}"', f'  zonefile: "{file}"',
                      "  for-downstream: yes", "  for-upstream: no",
                      "  fallback-enabled: no"]
        for origin, file in sorted(signed.items()):
            lines += ["auth-zone:", f'  name: "{origin}"', f'  zonefile: "{file}"',
                      "  for-downstream: no", "  for-upstream: yes",
                      "  fallback-enabled: no"]
        return "\n".join(lines) + "\n"


DnsServerFactory = Callable[..., DnsServer]


@pytest.fixture
def dns_server_factory(tmp_path_factory: pytest.TempPathFactory
                       ) -> Iterator[DnsServerFactory]:
    """factory(zones, **kwargs) -> a started DnsServer; every one is stopped afterwards."""
    servers: list[DnsServer] = []

    def factory(zones: Mapping[str, str], **kwargs: object) -> DnsServer:
        srv = DnsServer(zones, tmp_path_factory.mktemp("dns"), **kwargs)  # type: ignore[arg-type]
        servers.append(srv)
        srv.start()
        return srv

    yield factory
    for srv in servers:
        srv.stop()
