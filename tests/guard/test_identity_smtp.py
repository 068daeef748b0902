"""Sender identity through the real daemon: a tenant's sending domain is registered with
`mta domains add`, refused at MAIL FROM and at header From until the TXT record published
in the real test DNS server verifies it; a forged Received: and Authentication-Results
claiming to be us are removed and the delivered message's DKIM signature verifies."""

from __future__ import annotations

import asyncio
import json
import smtplib

import dkim

from mta.dkim.dnstxt import txt_lookup
from mta.dkim.keys import RSA, generate_key, txt_value
from mta.smtp.auth import hash_password
from tests.support.dnsserver import txt

PW = "pw-123456"


def _zones(dkim_p: str, verify: str = "") -> dict[str, str]:
    return {
        "dest.test": "@ IN MX 10 mx1.dest.test.\nmx1 IN A 127.0.0.2\n",
        "acme.test": f"""
@               IN TXT {txt("v=spf1 ip4:127.0.0.0/8 -all")}
{'@ IN TXT ' + txt(verify) if verify else ''}
_dmarc          IN TXT {txt("v=DMARC1; p=reject")}
s1._domainkey   IN TXT {txt(dkim_p)}
""",
    }


def _toml(key_path, mode: str = "enforce") -> str:
    pw = hash_password(PW, ln=10)
    return f"""
[policy]
sender_identity = "{mode}"

[tenants.acme]
[tenants.other]

[users.acme]
tenant = "acme"
password = "{pw}"
[users.other]
tenant = "other"
password = "{pw}"

[dkim."acme.test"]
selector = "s1"
key = "{key_path}"
subdomains = true
"""


def _session(port: int, user: str | None = "acme") -> smtplib.SMTP:
    s = smtplib.SMTP("127.0.0.1", port, timeout=20)
    s.ehlo("client.test")
    if user:
        s.login(user, PW)
    return s


def _msg(sender: str, extra: str = "") -> bytes:
    return (f"{extra}From: {sender}\r\nTo: bob@dest.test\r\nSubject: hi\r\n"
            f"Message-ID: <m-{abs(hash(extra + sender))}@acme.test>\r\n\r\nHello.\r\n").encode()


def _try(port: int, mail_from: str, header_from: str, extra: str = "",
         user: str | None = "acme") -> tuple[int, str]:
    """(code, text) of the first refusal (MAIL FROM or end of DATA), or the 250 of DATA."""
    with _session(port, user) as s:
        code, text = s.mail(mail_from)
        if code != 250:
            return code, text.decode()
        assert s.rcpt("bob@dest.test")[0] == 250
        code, text = s.data(_msg(header_from, extra))
        return code, text.decode()


def _cli_json(mta, *args: str) -> tuple[int, dict]:
    proc = mta.cli("domains", *args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _key(tmp_path) -> tuple[str, str]:
    key, pem = generate_key(RSA)
    path = tmp_path / "acme.key"
    path.write_bytes(pem)
    path.chmod(0o600)
    return str(path), txt_value(key)


async def test_unverified_domains_are_refused_until_the_txt_record_verifies(
        mta_factory, dns_server_factory, mx_factory, tmp_path):
    key_path, p = _key(tmp_path)
    dns = dns_server_factory(_zones(p))
    mx = await mx_factory("127.0.0.2")
    mta = await asyncio.to_thread(mta_factory, _toml(key_path), dns=dns.nameserver,
                                  delivery_port=mx_factory.port,
                                  delivery_extra='retry = ["1s"]')
    port = mta.smtp_port

    # No domain registered yet ("enforce"): nothing is checked for this tenant.
    code, _ = await asyncio.to_thread(_try, port, "a@anything.test", "a@anything.test")
    assert code == 250
    rc, reg = await asyncio.to_thread(_cli_json, mta, "add", "acme", "acme.test")
    assert rc == 0 and not reg["verified"]
    assert reg["txt_record"] == {"name": "acme.test", "type": "TXT",
                                 "value": f"mta-verify={reg['token']}"}

    # Registered, not verified: refused at MAIL FROM, naming the domain and the fix.
    code, text = await asyncio.to_thread(_try, port, "a@acme.test", "a@acme.test")
    assert code == 550 and text.startswith("5.7.1") and "acme.test" in text
    assert "mta domains verify" in text
    rc, rec = await asyncio.to_thread(_cli_json, mta, "verify", "acme", "acme.test")
    assert rc == 1 and not rec["verified"] and "no TXT" in rec["last_error"]

    # Published in the real DNS server: verify succeeds (uncached lookup).
    await asyncio.to_thread(dns.set_zones, _zones(p, f"mta-verify={reg['token']}"))
    rc, rec = await asyncio.to_thread(_cli_json, mta, "verify", "acme", "acme.test")
    assert rc == 0 and rec["verified"], rec

    # Another domain: refused at MAIL FROM; at header From even with a good MAIL FROM.
    code, text = await asyncio.to_thread(_try, port, "a@other.test", "a@acme.test")
    assert code == 550 and "5.7.1" in text and "other.test" in text
    code, text = await asyncio.to_thread(_try, port, "a@news.acme.test",
                                         "Security <security@bigbank.test>")
    assert code == 550 and "5.7.1" in text and "bigbank.test" in text
    assert await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "sender_refused"
                                   and e.get("where") == "header_from")

    # A verified subdomain sender, with forged trace: accepted, stripped, signed.
    forged = ("Received: from evil.test ([192.0.2.7])\r\n\tby mta.test (mta) with ESMTPSA; "
              "Mon, 1 Jan 2024 00:00:00 +0000\r\n"
              "Authentication-Results: mta.test; dkim=pass header.d=bigbank.test\r\n"
              "Authentication-Results: receiver.test; spf=pass\r\n")
    code, _ = await asyncio.to_thread(_try, port, "a@news.acme.test", "a@acme.test", forged)
    assert code == 250
    mail = [m for m in await mx.wait_for_messages(2, timeout=20) if b"evil" not in m.body
            and b"receiver.test" in m.body]
    assert len(mail) == 1
    body = mail[0].body
    head = body.split(b"\r\n\r\n")[0]
    assert head.count(b"Received:") == 1 and b"evil.test" not in head
    assert b"Authentication-Results: mta.test" not in head
    assert b"Authentication-Results: receiver.test" in head
    assert await asyncio.to_thread(dkim.verify, body, dnsfunc=txt_lookup([dns.nameserver]))
    [ev] = await asyncio.to_thread(mta.wait_events, lambda e: e["event"] == "trace_removed")
    assert ev["tenant"] == "acme" and ev["count"] == 2

    # Other tenants are not affected by acme's domains; the relay tenant neither.
    code, _ = await asyncio.to_thread(_try, port, "x@acme.test", "x@acme.test", "", "other")
    assert code == 250
    code, _ = await asyncio.to_thread(_try, port, "x@free.test", "x@free.test", "", None)
    assert code == 250

    rc, report = await asyncio.to_thread(_cli_json, mta, "check", "acme", "acme.test")
    assert report["spf"]["record"] == "v=spf1 ip4:127.0.0.0/8 -all"
    assert report["dkim"]["selectors"]["s1"]["matches_key"] is True
    assert report["dmarc"]["policy"] == "reject"
    assert report["alignment"] == {"dkim": True, "spf": True}
    assert report["registration"]["verified"] is True

    rc, listing = await asyncio.to_thread(_cli_json, mta, "list", "acme")
    assert [d["domain"] for d in listing] == ["acme.test"]
    proc = await asyncio.to_thread(mta.cli, "domains", "remove", "acme", "acme.test")
    assert proc.returncode == 0, proc.stderr


async def test_strict_refuses_a_tenant_with_no_domain(mta_factory, tmp_path):
    key_path, _ = _key(tmp_path)
    mta = await asyncio.to_thread(mta_factory, _toml(key_path, "strict"))
    code, text = await asyncio.to_thread(_try, mta.smtp_port, "security@bigbank.test",
                                         "security@bigbank.test")
    assert code == 550 and "bigbank.test" in text and "mta domains add" in text
    # The relay tenant "default" follows [identity] default_tenant ("off").
    code, _ = await asyncio.to_thread(_try, mta.smtp_port, "a@bigbank.test",
                                      "a@bigbank.test", "", None)
    assert code == 250
