"""The admin API of sending domains: precise errors for bad input, and the config keys'
errors naming the key."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from mta.config import ConfigError, parse_config
from tests.support.daemon import ADMIN_TOKEN


def _call(mta, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{mta.http_port}{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Authorization", f"Bearer {ADMIN_TOKEN}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_bad_input_gets_precise_errors(mta_factory):
    mta = mta_factory("[tenants.acme]\n")
    assert _call(mta, "POST", "/api/v1/admin/domains", {"tenant": "acme", "domain": "com"}
                 )[1]["error"]["code"] == "bad_domain"
    assert _call(mta, "POST", "/api/v1/admin/domains", {"tenant": "a b", "domain": "x.test"}
                 )[1]["error"]["code"] == "bad_tenant"
    status, err = _call(mta, "POST", "/api/v1/admin/domains/acme/x.test/verify")
    assert status == 404 and err["error"]["code"] == "unknown_domain"
    status, err = _call(mta, "DELETE", "/api/v1/admin/domains/acme/x.test")
    assert status == 404
    status, rec = _call(mta, "POST", "/api/v1/admin/domains",
                        {"tenant": "acme", "domain": "X.Test"})
    assert status == 201 and rec["domain"] == "x.test"
    again = _call(mta, "POST", "/api/v1/admin/domains", {"tenant": "acme", "domain": "x.test"})
    assert again[1]["token"] == rec["token"]  # idempotent
    assert [d["domain"] for d in _call(mta, "GET", "/api/v1/admin/domains?tenant=acme")[1][
        "domains"]] == ["x.test"]


@pytest.mark.parametrize("text, key", [
    ('[policy]\nsender_identity = "on"\n', "policy"),
    ('[identity]\ndefault_tenant = "yes"\n', "identity"),
    ('[identity]\nverify_label = "a b"\n', "identity"),
    ('[dnsbl]\naction = "block"\n', "dnsbl"),
    ('[dnsbl]\nclean_checks = 0\n', "dnsbl"),
])
def test_config_errors_name_the_section(text, key):
    with pytest.raises(ConfigError) as e:
        parse_config(text)
    assert any(key in line for line in e.value.errors), e.value.errors
