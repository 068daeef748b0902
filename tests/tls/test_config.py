"""[tls]: every bad key is reported at its own key, in the `FILE: key: problem` form."""

from __future__ import annotations

import pytest

from mta.config import ConfigError, parse_config


def test_defaults_honour_mta_sts_and_dane():
    t = parse_config("").tls
    assert t.mta_sts is True and t.dane is True and t.ca_file == "" and t.policy == {}
    assert t.max_policy_size == 64 * 1024 and t.https_port == 443


def test_a_full_section(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    t = parse_config(f'[tls]\nmta_sts = false\nca_file = "{ca}"\n'
                     'dane = false\npolicy = { "a.test" = "verify", "b.test" = "mta-sts", '
                     '"c.test" = "dane", "d.test" = "dane-only" }\n'
                     'fetch_timeout = "5s"\nmax_policy_size = "32KiB"\n').tls
    assert (t.mta_sts, t.ca_file, t.fetch_timeout, t.max_policy_size) == (
        False, str(ca), 5.0, 32 * 1024)
    assert t.dane is False
    assert t.policy == {"a.test": "verify", "b.test": "mta-sts", "c.test": "dane",
                        "d.test": "dane-only"}


@pytest.mark.parametrize(("text", "message"), [
    ("[tls]\nmta_sts = \"yes\"\n", "tls.mta_sts: expected"),
    ("[tls]\nmtasts = true\n", "tls.mtasts: unknown key"),
    ('[tls]\nca_file = "/nonexistent/ca.pem"\n', "tls.ca_file: file not found"),
    ('[tls]\npolicy = { "a.test" = "dnssec" }\n',
     'tls.policy."a.test": must be one of "opportunistic", "required", "verify", '
     '"disabled", "mta-sts", "dane", "dane-only", not \'dnssec\''),
    ('[tls]\npolicy = { "a.test" = "dane_only" }\n',
     'tls.policy."a.test": must be one of "opportunistic", "required", "verify", '
     '"disabled", "mta-sts", "dane", "dane-only", not \'dane_only\' '
     '(did you mean "dane-only"?)'),
    ("[tls]\ndane = \"yes\"\n", "tls.dane: expected"),
    ('[tls]\npolicy = { "A.test." = "verify" }\n', 'tls.policy."A.test.": must be a domain'),
    ('[tls]\npolicy = { "a.test" = 1 }\n', "tls.policy"),
    ('[tls]\nfetch_timeout = "0s"\n', "tls.fetch_timeout: must be positive"),
    ('[tls]\nmax_policy_size = "10MiB"\n', "tls.max_policy_size: must be between"),
    ("[tls]\nhttps_port = 0\n", "tls.https_port: must be a port number"),
])
def test_bad_keys_are_named(text, message):
    with pytest.raises(ConfigError) as e:
        parse_config(text, "mta.toml")
    assert f"mta.toml: {message}" in str(e.value), str(e.value)
