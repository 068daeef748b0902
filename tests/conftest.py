"""Fixtures shared by every test area: the real daemon, the real DNS server (Unbound),
and scriptable destination MX hosts. Each lives in tests/support/ with its own docs."""

pytest_plugins = [
    "tests.support.daemon",
    "tests.support.dnsserver",
    "tests.support.mx",
    "tests.support.redis",
    "tests.support.rspamd",
]
