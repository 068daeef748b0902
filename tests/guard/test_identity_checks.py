"""Sender identity's answers on a node's copy of the domain records: every From field is
checked, a remembered pass lasts only as long as the copy (and the mode) it was decided
on, and a change on another node arrives by a background read, never by making a message
wait (records in a real policy.db shared by two registries, as two workers share it)."""

from __future__ import annotations

import asyncio

import pytest

from mta.config.loader import parse_config
from mta.dns.resolver import TestResolver
from mta.policy import domains
from mta.policy.dnscheck import uncached_txt
from mta.policy.domains import DomainRegistry
from mta.policy.identity import SenderIdentity
from mta.policy.kv import kv_for
from mta.policy.sqlite_store import SqliteStore

HEAD = b"Received: from c.test by mta.test; now\r\n"


@pytest.fixture
async def store(tmp_path):
    s = await SqliteStore.open(tmp_path / "policy.db")
    yield s
    await s.aclose()


def _cfg(mode: str = "enforce"):
    return parse_config(f'[server]\nhostname = "mta.test"\n[policy]\nsender_identity = '
                        f'"{mode}"\n', "c.toml")


async def _registry(store: SqliteStore, zones: dict[str, str]) -> DomainRegistry:
    def lookup_txt(name: str):  # the zones as they are at the lookup
        return uncached_txt(TestResolver(zones))(name)
    reg = DomainRegistry(kv_for(store), lookup_txt, _cfg().identity)
    await reg.load()
    return reg


async def _verified(reg: DomainRegistry, zones: dict[str, str], tenant: str,
                    *names: str) -> None:
    for name in names:
        rec = await reg.add(tenant, name)
        zones[name] = f'@ TXT "mta-verify={rec.token}"\n'
        assert (await reg.verify(tenant, name)).verified


def _message(*froms: str) -> bytes:
    return HEAD + b"".join(f"From: {f}\r\n".encode() for f in froms) + b"\r\nbody\r\n"


async def test_every_from_field_is_checked(store):
    zones: dict[str, str] = {}
    reg = await _registry(store, zones)
    await _verified(reg, zones, "acme", "acme.test")
    ident = SenderIdentity(_cfg(), reg)
    assert ident.check_header_from("acme", _message("Acme <a@acme.test>")) is None
    # A second From (RFC 5322 allows one) naming someone else is refused, in either
    # order, and so is a field with no usable mailbox.
    for froms in (("a@acme.test", "Bank <security@bigbank.test>"),
                  ("security@bigbank.test", "a@acme.test")):
        reply = ident.check_header_from("acme", _message(*froms))
        assert reply is not None and reply.code == 550 and "bigbank.test" in str(reply)
    reply = ident.check_header_from("acme", _message("a@acme.test", "undisclosed"))
    assert reply is not None and reply.code == 550
    assert ident.check_header_from("acme", HEAD + b"\r\nno From\r\n") is not None
    # Folded and in odd case, the field is still found.
    assert ident.check_header_from(
        "acme", HEAD + b"FROM:\r\n Acme\r\n\t<a@news.acme.test>\r\n\r\nx\r\n") is None


async def test_a_remembered_pass_ends_when_the_records_or_the_mode_change(store):
    zones: dict[str, str] = {}
    reg = await _registry(store, zones)
    await _verified(reg, zones, "acme", "acme.test", "news.test")
    ident = SenderIdentity(_cfg(), reg)
    assert ident.answer_mail("acme", "<a@news.test>") is None
    assert ident.check_header_from("acme", _message("a@news.test")) is None
    assert await reg.remove("acme", "news.test")
    reply = ident.answer_mail("acme", "<a@news.test>")
    assert reply is not None and reply.code == 550 and "news.test" in str(reply)
    assert ident.check_header_from("acme", _message("a@news.test")) is not None

    # "enforce" leaves a tenant without domains alone; "strict" (a reload) does not,
    # though its sender passed a moment ago.
    assert ident.answer_mail("bare", "<x@bare.test>") is None
    ident.reload(_cfg("strict"))
    reply = ident.answer_mail("bare", "<x@bare.test>")
    assert reply is not None and "mta domains add" in str(reply)


async def test_another_nodes_change_arrives_by_a_background_read(store):
    zones: dict[str, str] = {}
    here = await _registry(store, zones)
    there = await _registry(store, zones)
    await _verified(there, zones, "acme", "acme.test", "news.test")
    await here.load()
    ident = SenderIdentity(_cfg(), here)
    assert ident.answer_mail("acme", "<a@news.test>") is None

    assert await there.remove("acme", "news.test")
    # Within the refresh period this node decides on its copy.
    assert ident.answer_mail("acme", "<a@news.test>") is None
    await asyncio.sleep(domains._REFRESH + 0.1)
    # Past it, the answer still comes from the copy at once and a read starts beside
    # it; once that read is in, the removal holds here too.
    assert ident.answer_mail("acme", "<a@news.test>") is None
    for _ in range(100):
        await asyncio.sleep(0.02)
        if ident.answer_mail("acme", "<a@news.test>") is not None:
            break
    else:
        raise AssertionError("the background read never brought the removal")
    assert ident.answer_mail("acme", "<a@acme.test>") is None
