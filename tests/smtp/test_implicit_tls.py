"""Implicit TLS (RFC 8314, port 465 "submissions"): `[smtp] listen_tls` speaks TLS from the
first byte; the session is TLS from the greeting (no STARTTLS offered, AUTH allowed where
it needs TLS), through Python's SMTP_SSL and swaks --tlsc; a client that speaks plain
text to it is dropped without harm; the config needs the certificate."""

from __future__ import annotations

import asyncio
import smtplib
import socket

import pytest

from mta.config import ConfigError, parse_config
from tests.smtp.conftest import PASSWORD, StartServer
from tests.smtp.test_server import MSG, _net, no_verify, swaks


async def _start(start_server: StartServer, tls_files):
    cert, key = tls_files
    srv = await start_server(tls_cert=cert, tls_key=key, listen_tls=[("127.0.0.1", 0)],
                             relay_networks=[_net("127.0.0.2/32")])
    return srv, srv.server.addresses[1][1]


async def test_smtp_ssl_logs_in_and_sends_without_starttls(start_server: StartServer,
                                                           tls_files):
    srv, port = await _start(start_server, tls_files)

    def session() -> tuple[str, dict]:
        with smtplib.SMTP_SSL(srv.host, port, timeout=5, context=no_verify()) as s:
            s.ehlo("client.test")
            features = s.ehlo_resp.decode()
            s.login("alice", PASSWORD)
            return features, s.sendmail("a@b.test", ["x@y.test"], MSG)

    features, refused = await asyncio.to_thread(session)
    assert "STARTTLS" not in features and "AUTH" in features and refused == {}
    (env, data), = srv.handler.messages
    assert (env.tenant, env.auth_user) == ("acme", "alice")
    assert b"with ESMTPSA" in data


async def test_swaks_tlsc(start_server: StartServer, tls_files):
    srv, port = await _start(start_server, tls_files)
    rc, out = await swaks("--server", f"{srv.host}:{port}", "--tlsc", "--from", "a@b.test",
                          "--to", "x@y.test", "--auth", "PLAIN", "--auth-user", "alice",
                          "--auth-password", PASSWORD)
    assert rc == 0, out
    assert "250 2.0.0 Ok: queued as" in out


async def test_a_plain_text_client_is_dropped_and_the_listener_goes_on(
        start_server: StartServer, tls_files):
    srv, port = await _start(start_server, tls_files)

    def plain() -> bytes:
        with socket.create_connection((srv.host, port), timeout=5) as s:
            s.sendall(b"EHLO client.test\r\n")
            try:
                return s.recv(100)
            except (ConnectionResetError, TimeoutError):
                return b""

    assert not (await asyncio.to_thread(plain)).startswith(b"220")

    def ok() -> dict:
        with smtplib.SMTP_SSL(srv.host, port, timeout=5, context=no_verify()) as s:
            s.login("alice", PASSWORD)
            return s.sendmail("a@b.test", ["x@y.test"], MSG)

    assert await asyncio.to_thread(ok) == {}


def test_listen_tls_needs_a_certificate():
    with pytest.raises(ConfigError) as e:
        parse_config('[smtp]\nlisten_tls = ["127.0.0.1:465"]\n', "c.toml")
    assert e.value.errors == ["c.toml: smtp.listen_tls: implicit TLS needs smtp.tls_cert "
                              "and smtp.tls_key"]
