"""[dkim."example.com"] sections: how they load, and `validate(cfg)` lines that name the file
and key for every problem (what `mta check-config` prints, and why `serve` refuses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mta.config import ConfigError, parse_config
from mta.dkim import DkimConfigError, DkimSigner, validate
from tests.dkim.helpers import Keys


def config(tmp_path: Path, text: str) -> object:
    return parse_config(text, str(tmp_path / "config.toml"), tmp_path)


def problems(tmp_path: Path, text: str) -> list[str]:
    return validate(config(tmp_path, text))  # type: ignore[arg-type]


def test_valid_section_loads_and_relative_key_paths_follow_the_config_file(
        tmp_path: Path, keys: Keys) -> None:
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "s1.key").write_bytes(keys.path["rsa1"].read_bytes())
    cfg = config(tmp_path, '[dkim."example.com"]\nselector = "s1"\nkey = "k/s1.key"\n')
    assert validate(cfg) == []  # type: ignore[arg-type]
    assert cfg.dkim["example.com"].key == tmp_path / "k" / "s1.key"  # type: ignore[attr-defined]


def test_switch_at_accepts_toml_date_and_datetime(tmp_path: Path) -> None:
    for text, expected in (("2026-12-01", 1796083200.0),
                           ("2026-12-01T01:00:00+01:00", 1796083200.0),
                           ('"2026-12-01T00:00:00Z"', 1796083200.0)):
        cfg = config(tmp_path, f'[dkim."example.com"]\nswitch_at = {text}\n')
        assert cfg.dkim["example.com"].switch_at == expected  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match=r'dkim\."example.com"\.switch_at: .*date'):
        config(tmp_path, '[dkim."example.com"]\nswitch_at = "soon"\n')


def test_missing_key_file_is_an_error_naming_file_and_key(tmp_path: Path) -> None:
    out = problems(tmp_path, '[dkim."example.com"]\nselector = "s1"\nkey = "gone.key"\n')
    assert out == [f'{tmp_path}/config.toml: dkim."example.com".key: cannot read '
                   f'{tmp_path}/gone.key: No such file or directory']


def test_invalid_key_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "bad.key").write_text("hello\n")
    out = problems(tmp_path, '[dkim."example.com"]\nselector = "s1"\nkey = "bad.key"\n')
    assert len(out) == 1 and out[0].startswith(
        f'{tmp_path}/config.toml: dkim."example.com".key: {tmp_path}/bad.key: not a PEM')


def test_from_config_raises_with_the_same_lines(tmp_path: Path) -> None:
    cfg = config(tmp_path, '[dkim."example.com"]\nselector = "s1"\nkey = "gone.key"\n')
    with pytest.raises(DkimConfigError) as e:
        DkimSigner.from_config(cfg.dkim, file=str(cfg.path))  # type: ignore[attr-defined]
    assert e.value.errors == validate(cfg)  # type: ignore[arg-type]


@pytest.mark.parametrize("body, key, problem", [
    ('', "selector", "required for rsa-sha256"),
    ('selector = "s1"', "key", "required with selector"),
    ('selector = "s 1"\nkey = "{rsa1}"', "selector", "invalid selector"),
    ('algorithms = []', "algorithms", "at least one"),
    ('algorithms = ["rsa-sha1"]', "algorithms[0]", "unknown algorithm"),
    ('selector = "s1"\nkey = "{rsa1}"\nalgorithms = ["rsa-sha256", "rsa-sha256"]',
     "algorithms[1]", "listed twice"),
    ('selector = "s1"\nkey = "{rsa1}"\nalgorithms = ["rsa-sha256", "ed25519-sha256"]',
     "ed25519_selector", "required for ed25519-sha256"),
    ('selector = "s1"\nkey = "{rsa1}"\ned25519_selector = "e1"', "ed25519_selector",
     "ed25519-sha256 is not in algorithms"),
    ('selector = "s1"\nkey = "{ed1}"', "key", "not a PEM RSA private key"),
    ('selector = "s1"\nkey = "{rsa1}"\nswitch_at = 2026-12-01', "next_selector",
     "required for rsa-sha256 with switch_at"),
    ('selector = "s1"\nkey = "{rsa1}"\nnext_selector = "s1"\nnext_key = "{rsa2}"\n'
     'switch_at = 2026-12-01', "next_selector", "must differ"),
    ('selector = "s1"\nkey = "{rsa1}"\nheaders = ["To"]', "headers", "must include From"),
    ('selector = "s1"\nkey = "{rsa1}"\nheaders = ["From", "Received"]', "headers[1]",
     "must not be signed"),
    ('selector = "s1"\nkey = "{rsa1}"\noversign = ["Bad Name"]', "oversign[0]",
     "invalid header name"),
    ('selector = "s1"\nkey = "{rsa1}"\ncanonicalization = "loose/relaxed"',
     "canonicalization", "invalid"),
])
def test_section_problems_name_the_key(tmp_path: Path, keys: Keys, body: str, key: str,
                                       problem: str) -> None:
    text = '[dkim."example.com"]\n' + body.format(**{k: str(v) for k, v in keys.path.items()})
    out = problems(tmp_path, text + "\n")
    prefix = f'{tmp_path}/config.toml: dkim."example.com".{key}: '
    assert any(line.startswith(prefix) and problem in line for line in out), out


def test_sign_dsn_on_two_domains_is_an_error(tmp_path: Path, keys: Keys) -> None:
    section = 'selector = "s1"\nkey = "{}"\nsign_dsn = true\n'.format(keys.path["rsa1"])
    out = problems(tmp_path, f'[dkim."a.example"]\n{section}[dkim."b.example"]\n{section}')
    assert out == [f"{tmp_path}/config.toml: dkim: sign_dsn is set for more than one "
                   "domain (a.example, b.example)"]


def test_unknown_key_in_section_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'dkim\."example.com"\.selectr: unknown key'):
        config(tmp_path, '[dkim."example.com"]\nselectr = "s1"\n')
