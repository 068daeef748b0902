"""What must load before the daemon serves a config, beyond the file's own types: rules
written in other subpackages' syntax, keys and certificates. `mta check-config` and `mta
serve` accept the same configs, and SIGHUP refuses a config that fails here.
"""

from __future__ import annotations

from mta.config import Config

__all__ = ["validate_runtime"]


def validate_runtime(cfg: Config) -> list[str]:
    """Checks beyond the config file's own types: rules in other subpackages' syntax, and
    keys or certificates that must load."""
    from mta.bounce.classify import Classifier, RulesError
    from mta.dkim.signer import validate as validate_dkim
    from mta.shaping import validate as validate_shaping

    errors = list(validate_shaping(cfg))
    errors += validate_dkim(cfg)
    try:
        Classifier.from_config(cfg)
    except RulesError as e:
        errors += e.errors
    try:
        import ssl

        s = cfg.smtp
        if s.tls_cert is not None and s.tls_key is not None:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                s.tls_cert, s.tls_key)
    except (ssl.SSLError, OSError) as e:
        errors.append(f"{cfg.path}: smtp.tls_cert: cannot load certificate and key: {e}")
    return errors
