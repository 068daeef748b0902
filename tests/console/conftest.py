"""A real daemon with console accounts, and headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) to look at it the way an operator does."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from mta.smtp.auth import hash_password
from tests.support.daemon import ADMIN_TOKEN, MtaProcess, free_port
from tests.support.dnsserver import DnsServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
PASSWORD = "correct horse battery staple"


def browser_missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not os.access(path, os.X_OK):
            return (f"{path} is missing: install Debian's chromium and chromium-driver "
                    "(tests/support/system-deps.sh does)")
    return None


def console_toml(*, burst: int = 100) -> str:
    # ln=4: a cheap scrypt for tests; the format is what `mta passwd` prints.
    h = hash_password(PASSWORD, ln=4)
    return f"""
[tenants.acme]
api_keys = ["key-acme"]

[tenants.globex]
api_keys = ["key-globex"]

[console]
sign_in_burst = {burst}

[console.accounts.olga]
password = "{h}"
role = "operator"

[console.accounts.ada]
password = "{h}"
role = "admin"

[console.accounts.vera]
password = "{h}"
role = "viewer"

[console.accounts.acme]
password = "{h}"
tenant = "acme"
"""


class Site:
    """The daemon, with what a test needs to reach it like a user would."""

    def __init__(self, mta: MtaProcess) -> None:
        self.mta = mta
        self.base = f"http://127.0.0.1:{mta.http_port}"

    def inject(self, key: str, to: str, subject: str = "hello") -> str:
        body = json.dumps({"from": "news@sender.test", "to": [to], "subject": subject,
                           "text": "hi"}).encode()
        req = urllib.request.Request(self.base + "/api/v1/messages", data=body,
                                     headers={"Authorization": f"Bearer {key}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())["id"]

    def admin(self, path: str, body: dict | None = None) -> dict:
        """GET (or POST `body`) an admin API route, with the admin token."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data,
                                     headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


# The destinations' MX hosts resolve to loopback addresses where nothing listens: every
# attempt is refused, so mail is deferred and waits in the queue under its site.
ZONES = {"dest.test": "@ MX 10 mx\nmx A 127.0.0.77\n",
         "globex-dest.test": "@ MX 10 mx\nmx A 127.0.0.78\n"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    dns = DnsServer(ZONES, tmp_path_factory.mktemp("console-dns"))
    dns.start()
    workdir = tmp_path_factory.mktemp("console-mta")
    mta = MtaProcess(workdir, console_toml(), dns=dns.nameserver, delivery_port=free_port())
    try:
        mta.start()
        yield Site(mta)
    finally:
        mta.kill()
        dns.stop()


def make_chrome(width: int = 1280, height: int = 900):  # -> selenium webdriver.Chrome
    """Headless Chromium that reaches loopback only (bench/console.py uses it too)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_AVOID_STATS", "true")  # selenium: no usage statistics
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update",
                "--disable-default-apps", "--disable-domain-reliability",
                "--disable-client-side-phishing-detection",
                # Nothing may leave this machine: every non-loopback request goes to a
                # closed local port (loopback is never proxied).
                "--proxy-server=http://127.0.0.1:9"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture(scope="module")
def chrome() -> Iterator[object]:
    reason = browser_missing()
    if reason:
        pytest.skip(reason)
    driver = make_chrome()
    try:
        yield driver
    finally:
        with contextlib.suppress(Exception):
            driver.quit()


@pytest.fixture
def shots(tmp_path) -> Path:
    """Screenshots of each page, for a person to review (the test's output directory)."""
    d = tmp_path / "screenshots"
    d.mkdir()
    return d
