"""`mta licence keygen | issue | show`: keys and licences are local files; `show` adds this
month's usage from the running daemon when it answers (/api/v1/admin/licence)."""

from __future__ import annotations

import datetime as dt
import json
import re
import smtplib
import subprocess
import sys
from pathlib import Path

from mta.policy.licence import parse_licence
from tests.support.daemon import free_port


def mta_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mta.cli", *args], capture_output=True,
                          text=True, timeout=30, cwd=cwd)


def keygen(tmp_path: Path) -> tuple[Path, str]:
    """A private key file written by `licence keygen -o`, and the printed public key."""
    proc = mta_cli("licence", "keygen", "-o", str(tmp_path / "licence.key"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    public = re.search(r'^licence_public_key = "([A-Za-z0-9+/=]{44})"$', proc.stdout, re.M)
    assert public, proc.stdout
    assert (tmp_path / "licence.key").stat().st_mode & 0o777 == 0o600
    return tmp_path / "licence.key", public.group(1)


def issue(tmp_path: Path, key: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return mta_cli("licence", "issue", "--private-key", str(key), "--licensee", "Acme Mail",
                   "--from", "2026-01-01", "--until", "2099-12-31", "--monthly-volume",
                   "10,000", "--max-connections", "50", *extra, cwd=tmp_path)


def test_keygen_prints_a_keypair_that_signs_and_verifies(tmp_path):
    proc = mta_cli("licence", "keygen", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    private = re.search(r'^private_key = "(\S+)"$', proc.stdout, re.M).group(1)
    public = re.search(r'^licence_public_key = "(\S+)"$', proc.stdout, re.M).group(1)
    # The printed line itself is accepted as the key file.
    (tmp_path / "k").write_text(f'private_key = "{private}"\n')
    out = issue(tmp_path, tmp_path / "k")
    assert out.returncode == 0, out.stderr
    assert parse_licence(out.stdout, public).licensee == "Acme Mail"

    again = mta_cli("licence", "keygen", "-o", str(tmp_path / "k"), cwd=tmp_path)
    assert again.returncode == 73 and "exists; not overwriting it" in again.stderr


def test_issue_then_show_round_trip_without_a_daemon(tmp_path):
    key, public = keygen(tmp_path)
    proc = issue(tmp_path, key, "-o", str(tmp_path / "acme.licence"))
    assert proc.returncode == 0, proc.stderr
    assert re.fullmatch(rf"{tmp_path}/acme.licence: licence [0-9a-f]{{32}} for Acme Mail, "
                        r"valid 2026-01-01 \.\. 2099-12-31\n", proc.stdout)

    # A config that names no licence key: --public-key is enough; usage is unknown (no daemon
    # answers on its admin port - a free one, so a `make run` on 8025 is not asked).
    cfg = tmp_path / "mta.toml"
    cfg.write_text(f'[http]\nlisten = ["127.0.0.1:{free_port()}"]\n')
    proc = mta_cli("-c", str(cfg), "licence", "show",
                   str(tmp_path / "acme.licence"), "--public-key", public, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    fields = dict(re.findall(r"^([a-z ]+):\s+(.*)$", proc.stdout, re.M))
    assert fields["licensee"] == "Acme Mail"
    assert fields["monthly volume"] == "10,000 recipients/month"
    assert fields["max connections"] == "50"
    assert fields["signature"] == "ok"
    today = dt.date.today()  # UTC on this machine and in the default [policy] timezone
    assert abs(int(fields["days left"]) - ((dt.date(2099, 12, 31) - today).days + 1)) <= 1
    assert fields["used"].startswith("unknown: cannot reach the daemon")

    # One changed byte and it no longer verifies: 65 (EX_DATAERR), saying why.
    text = (tmp_path / "acme.licence").read_text().replace("10000", "90000")
    (tmp_path / "forged.licence").write_text(text)
    proc = mta_cli("-c", str(tmp_path / "absent.toml"), "licence", "show",
                   str(tmp_path / "forged.licence"), "--public-key", public, cwd=tmp_path)
    assert proc.returncode == 65
    assert proc.stderr == ("mta licence show: signature does not verify: the licence was "
                           "altered or issued for another key\n")


def test_show_adds_this_months_usage_from_the_running_daemon(tmp_path, mta_factory):
    key, public = keygen(tmp_path)
    assert issue(tmp_path, key, "-o", str(tmp_path / "acme.licence")).returncode == 0
    mta = mta_factory(f'[policy]\nlicence_file = "{tmp_path}/acme.licence"\n'
                      f'licence_public_key = "{public}"\n')
    with smtplib.SMTP("127.0.0.1", mta.smtp_port, timeout=10) as s:
        s.sendmail("a@sender.test", ["b@dest.test", "c@dest.test"],
                   b"From: a@sender.test\r\nSubject: hi\r\n\r\nhello\r\n")

    proc = mta.cli("licence", "show")  # FILE from [policy] licence_file
    assert proc.returncode == 0, proc.stderr
    month = dt.date.today().strftime("%Y-%m")
    assert f"used:            2 of 10,000 in {month} (0.0%)\n" in proc.stdout
    assert "remaining:       9,998\n" in proc.stdout
    doc = json.loads(mta.cli("licence", "show", "--json").stdout)
    assert doc["usage"] == {"month": month, "used": 2, "remaining": 9998, "ratio": 0.0002}
    assert doc["state"] == "valid" and doc["licensee"] == "Acme Mail"


def test_usage_and_config_errors(tmp_path):
    key, _ = keygen(tmp_path)
    proc = issue(tmp_path, key, "--until", "2025-12-31")
    assert proc.returncode == 65 and "valid_until is before valid_from" in proc.stderr
    proc = mta_cli("licence", "issue", "--private-key", str(tmp_path / "nope"), "--licensee",
                   "x", "--from", "2026-01-01", "--until", "2026-12-31", "--monthly-volume",
                   "1", "--max-connections", "1", cwd=tmp_path)
    assert proc.returncode == 66 and "cannot read the private key" in proc.stderr
    proc = issue(tmp_path, key, "--from", "next tuesday")
    assert proc.returncode == 64 and "is not a date like 2026-12-31" in proc.stderr

    cfg = tmp_path / "mta.toml"
    cfg.write_text("[server]\nhostname = \"mta.test\"\n")
    proc = mta_cli("-c", str(cfg), "licence", "show", cwd=tmp_path)
    assert proc.returncode == 64 and "no [policy] licence_file configured" in proc.stderr
    proc = mta_cli("-c", str(cfg), "licence", "show", str(tmp_path / "x.licence"),
                   cwd=tmp_path)
    assert proc.returncode == 78
    assert proc.stderr == (f"mta licence show: {cfg}: policy.licence_public_key: required "
                           "to verify a licence (or give --public-key)\n")
