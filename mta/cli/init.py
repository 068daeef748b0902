"""`mta init`: set a server up for production in one command.

Writes an annotated DIR/mta.toml from the template shipped beside this module
(mta-init.toml), creates the spool and log directories, optionally a self-signed TLS pair,
and prints what is left to do by hand: DNS records, a DKIM key, check-config, systemctl.
Ownership follows the systemd unit: the daemon runs as USER, so when run as root the
directories and keys it writes are USER's and the config is root:USER 0640 (it holds the
admin token). An existing config is never replaced without --force.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import socket
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mta.cli.common import EX_CANTCREAT, EX_OK, EX_USAGE, command

TEMPLATE = Path(__file__).with_name("mta-init.toml")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")


@dataclass(frozen=True)
class Owner:
    """Who files get: (uid, gid) of USER when running as root and USER exists, else None
    (files stay the caller's, as `mta init --dir ~/mta` as a normal user expects)."""

    uid: int | None
    gid: int | None
    note: str

    def apply(self, path: Path, *, group_only: bool = False) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, -1 if group_only else self.uid, self.gid)


def _owner(user: str) -> Owner:
    if os.geteuid() != 0:
        return Owner(None, None, "not root: files are owned by the current user")
    import pwd

    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return Owner(None, None, f"user {user!r} does not exist: files are owned by root "
                                 "(create it, e.g. `sudo make install` does, and chown)")
    return Owner(pw.pw_uid, pw.pw_gid, f"owned by {user}")


def _hostname_arg(text: str) -> str:
    name = text.strip().rstrip(".").lower()
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.fullmatch(x) for x in labels):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a fully qualified host name like mail.example.com")
    return name


def _listen_arg(text: str) -> str:
    from mta.config import parse_hostport

    try:
        parse_hostport(text, 25)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
    if ":" not in text.rsplit("]", 1)[-1]:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 0.0.0.0:25")
    return text


def _default_hostname() -> str | None:
    """This host's fully qualified name, or None when it has none worth publishing."""
    name = socket.getfqdn().lower().rstrip(".")
    try:
        return _hostname_arg(name) if not name.endswith(".localdomain") else None
    except argparse.ArgumentTypeError:
        return None


def _resolvers() -> str:
    """The nameservers /etc/resolv.conf lists now, for a comment."""
    try:
        lines = Path("/etc/resolv.conf").read_text().splitlines()
    except OSError:
        return "none readable now"
    found = [p[1] for p in (line.split() for line in lines)
             if len(p) >= 2 and p[0] == "nameserver"]
    return "now " + ", ".join(found) if found else "none listed now"


def _mkdir(path: Path, owner: Owner) -> None:
    """A directory 0750 (whatever the umask), USER's when root."""
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    os.chmod(path, 0o750)
    owner.apply(path)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Whole or nothing, created with `mode` (a reader never sees half a file or a moment
    where the admin token or a key is world-readable)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_tls_pair(cert: Path, key: Path, hostname: str) -> None:
    """A self-signed RSA-2048 certificate for `hostname` (what every SMTP client accepts
    for opportunistic STARTTLS), valid 825 days; the key file 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    pkey = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(pkey.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .sign(pkey, hashes.SHA256()))
    _write(key, pkey.private_bytes(serialization.Encoding.PEM,
                                   serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()), 0o600)
    _write(cert, certificate.public_bytes(serialization.Encoding.PEM), 0o644)


def _q(value: object) -> str:
    """A TOML basic string (JSON's escapes are TOML's)."""
    return json.dumps(str(value))


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(_q(x) for x in items) + "]"


def _domain_of(hostname: str) -> str:
    """mail.example.com -> example.com; example.com stays (the records then name it)."""
    labels = hostname.split(".")
    return ".".join(labels[1:]) if len(labels) > 2 else hostname


def cmd_init(args: argparse.Namespace) -> int:
    conf_dir = Path(args.dir).absolute()
    config = conf_dir / "mta.toml"
    spool = Path(args.spool).absolute()
    log_dir = Path(args.log_dir).absolute()
    hostname = args.hostname or _default_hostname()
    if hostname is None:
        print(f"mta init: this host's name {socket.getfqdn()!r} is not fully qualified: "
              "give --hostname mail.example.com", file=sys.stderr)
        return EX_USAGE
    if config.exists() and not args.force:
        print(f"mta init: {config} exists; not overwriting it (--force replaces it)",
              file=sys.stderr)
        return EX_CANTCREAT
    owner = _owner(args.user)
    tls_dir, dkim_dir = conf_dir / "tls", conf_dir / "dkim"
    cert, key = tls_dir / "cert.pem", tls_dir / "key.pem"
    made_tls = False
    try:
        conf_dir.mkdir(mode=0o755, parents=True, exist_ok=True)
        for d in (spool, log_dir):
            _mkdir(d, owner)
        # Keys the daemon reads live here: root-owned, USER may read (group).
        for d in (tls_dir, dkim_dir) if args.tls else (dkim_dir,):
            d.mkdir(mode=0o750, exist_ok=True)
            os.chmod(d, 0o750)
            owner.apply(d, group_only=True)
        if args.tls and (args.force or not (cert.exists() and key.exists())):
            make_tls_pair(cert, key, hostname)
            owner.apply(key)  # 0600: only the daemon's user reads it
            made_tls = True
        text = _render(args, config, hostname, spool, log_dir, cert, key, dkim_dir)
        _write(config, text.encode(), 0o640)
        owner.apply(config, group_only=True)
    except OSError as e:
        print(f"mta init: cannot create {e.filename or conf_dir}: {e.strerror}",
              file=sys.stderr)
        return EX_CANTCREAT
    _next_steps(args, config, hostname, spool, log_dir, owner, dkim_dir,
                (cert, key, made_tls) if args.tls else None)
    return EX_OK


def _render(args: argparse.Namespace, config: Path, hostname: str, spool: Path,
            log_dir: Path, cert: Path, key: Path, dkim_dir: Path) -> str:
    if args.tls:
        tls = ("# STARTTLS with the self-signed pair `mta init --tls` made: replace it with a\n"
               f"# real certificate for {hostname} (e.g. Let's Encrypt), then reload.\n"
               f"tls_cert = {_q(cert)}\ntls_key = {_q(key)}")
    else:
        tls = ("# STARTTLS: without a certificate it is not offered, and AUTH works from\n"
               "# loopback only. `mta init --tls` makes a self-signed pair; a real one is "
               "better.\n"
               f"# tls_cert = {_q(cert)}\n# tls_key = {_q(key)}")
    return string.Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        hostname=hostname, date=dt.date.today().isoformat(), config=config,
        smtp_listen=_toml_list(args.listen or ["0.0.0.0:25"]),
        http_listen=_toml_list(args.http_listen or ["127.0.0.1:8025"]),
        tls=tls, admin_token=secrets.token_urlsafe(32), spool=_q(spool),
        events=_q(log_dir / "events.jsonl"), resolv=_resolvers(), dkim_dir=dkim_dir)


def _next_steps(args: argparse.Namespace, config: Path, hostname: str, spool: Path,
                log_dir: Path, owner: Owner, dkim_dir: Path,
                tls: tuple[Path, Path, bool] | None) -> None:
    domain = _domain_of(hostname)
    selector = dt.date.today().strftime("s%Y%m")
    print(f"wrote {config} (0640" + (f", group {args.user})" if owner.uid is not None else ")"))
    print(f"created {spool} and {log_dir} (0750, {owner.note})")
    if tls is not None:
        cert, key, made = tls
        print(f"{'made' if made else 'kept the existing'} self-signed TLS pair {cert}, "
              f"{key} (key 0600)")
    records = [(f"{hostname}.", "A", "ADDRESS"),
               (f"{domain}.", "MX", f"10 {hostname}."),
               (f"{domain}.", "TXT", f'"v=spf1 a:{hostname} ~all"'),
               (f"{hostname}.", "TXT", '"v=spf1 a -all"'),
               (f"_dmarc.{domain}.", "TXT", f'"v=DMARC1; p=none; rua=mailto:postmaster@{domain}"')]
    width = max(len(r[0]) for r in records)
    print("\nNext steps:\n1. Publish in DNS (ADDRESS is this server's public address):")
    for name, rtype, value in records:
        print(f"     {name:<{width}}  {rtype:<3}  {value}")
    print(f"""   and ask the provider of ADDRESS for reverse DNS (PTR) to {hostname}.
2. Make a DKIM key, add the two lines it prints to [dkim."{domain}"] in {config},
   and publish the TXT record it prints:
     mta dkim keygen --domain {domain} --selector {selector} --out {dkim_dir}""")
    if owner.uid is not None:
        print(f"     chown {args.user} {dkim_dir}/{domain}.{selector}.key")
    print(f"""3. mta check-config -c {config}
4. systemctl enable --now mta""")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    i = command(sub, common, "init", cmd_init,
                "write a production config, spool and log directories (and a TLS pair)")
    i.add_argument("--dir", default="/etc/mta", help="where mta.toml goes (default: %(default)s)")
    i.add_argument("--spool", default="/var/spool/mta", help="spool directory (default: "
                                                             "%(default)s)")
    i.add_argument("--log-dir", default="/var/log/mta",
                   help="directory of the events log (default: %(default)s)")
    i.add_argument("--user", default="mta",
                   help="the daemon's user, owner of what it writes (default: %(default)s)")
    i.add_argument("--hostname", type=_hostname_arg,
                   help="the server's name in DNS (default: this host's FQDN)")
    i.add_argument("--listen", action="append", type=_listen_arg, metavar="HOST:PORT",
                   help="SMTP listener, repeatable (default: 0.0.0.0:25)")
    i.add_argument("--http-listen", action="append", type=_listen_arg, metavar="HOST:PORT",
                   help="admin/HTTP listener, repeatable (default: 127.0.0.1:8025)")
    i.add_argument("--tls", action="store_true",
                   help="make a self-signed TLS pair in DIR/tls and use it for STARTTLS")
    i.add_argument("--force", action="store_true", help="replace an existing DIR/mta.toml "
                                                        "(and, with --tls, the pair)")
