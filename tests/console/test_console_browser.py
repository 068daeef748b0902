"""The operator console in headless Chromium against a real daemon: sign in, find a queued
message on the Queue page, hold and release it through the pages (checked through the
admin JSON API), a viewer refused, a tenant confined to its own tenant. Each page is saved
as a screenshot under the test's output directory."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.console.conftest import PASSWORD, Site, console_toml
from tests.support.daemon import MtaProcess, free_port

# Mail to dest.test and globex-dest.test is deferred (their MX hosts refuse connections)
# and waits in the queue.


def sign_in(driver, site, user: str) -> None:
    driver.delete_all_cookies()
    driver.get(site.base + "/console/")  # not signed in: sent to the sign-in page
    assert driver.current_url.endswith("/console/sign-in")
    driver.find_element(By.ID, "user").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "sign-in").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "who")))
    assert driver.find_element(By.ID, "who").text.startswith(user)


def wait_text(driver, element_id: str, text: str) -> None:
    WebDriverWait(driver, 10).until(
        ec.text_to_be_present_in_element((By.ID, element_id), text))


def shot(driver, shots, name: str) -> None:
    # The full page height, so tables below the fold are in the picture too.
    height = driver.execute_script("return document.documentElement.scrollHeight")
    width = driver.get_window_size()["width"]
    driver.set_window_size(width, max(600, min(height + 120, 4000)))
    driver.save_screenshot(str(shots / f"{name}.png"))
    assert (shots / f"{name}.png").stat().st_size > 1000


def message_ids_on_page(driver) -> set[str]:
    rows = driver.find_elements(By.CSS_SELECTOR, "#messages tbody tr[data-id]")
    return {r.get_attribute("data-id") for r in rows}


@pytest.fixture(scope="module")
def queued(site) -> dict[str, str]:
    ids = {"acme": site.inject("key-acme", "rcpt@dest.test", "acme news"),
           "globex": site.inject("key-globex", "someone@globex-dest.test", "globex news")}
    # Routed and tried once: each waits under its site, deferred.
    for msg_id in ids.values():
        assert site.mta.wait_events(lambda e, i=msg_id: e["event"] == "deferred"
                                    and e.get("id") == i, timeout=30), site.mta.stderr
    return ids


def test_an_operator_holds_and_releases_a_queued_message_through_the_pages(
        site, chrome, queued, shots):
    d = chrome
    d.set_window_size(1280, 900)
    sign_in(d, site, "olga")
    assert d.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert int(d.find_element(By.ID, "queued-messages").text) >= 2
    shot(d, shots, "overview")

    d.get(site.base + "/console/queue")
    msg_id = queued["acme"]
    assert {msg_id, queued["globex"]} <= message_ids_on_page(d)
    [rcpt] = site.admin(f"/api/v1/admin/queue/{msg_id}")["recipients"]
    assert rcpt["site"] and rcpt["site"] in d.find_element(By.ID, "qshape").text
    shot(d, shots, "queue")
    d.find_element(By.LINK_TEXT, rcpt["site"]).click()  # drill down to the site's messages
    assert message_ids_on_page(d) == {msg_id}

    d.find_element(By.LINK_TEXT, msg_id).click()
    assert d.find_element(By.ID, "message-state").text == "queued"
    shot(d, shots, "message")
    d.find_element(By.ID, "hold").click()
    assert "Confirm: hold" in d.find_element(By.TAG_NAME, "h1").text
    shot(d, shots, "confirm-hold")
    d.find_element(By.ID, "confirm").click()
    wait_text(d, "message-state", "held")
    assert "held" in d.find_element(By.ID, "done").text
    assert site.admin(f"/api/v1/admin/queue/{msg_id}")["state"] == "held"
    shot(d, shots, "message-held")

    d.find_element(By.ID, "release").click()
    d.find_element(By.ID, "confirm").click()
    wait_text(d, "message-state", "queued")
    assert site.admin(f"/api/v1/admin/queue/{msg_id}")["state"] == "queued"

    for path, name in (("/console/tenants", "tenants"), ("/console/tenants/acme", "tenant"),
                       ("/console/paths", "paths")):
        d.get(site.base + path)
        assert d.find_elements(By.TAG_NAME, "h1"), path
        assert "Error" not in d.title, path
        shot(d, shots, name)
    assert f"->{rcpt['site']}" in d.find_element(By.ID, "paths").text

    # Events: what happened is there, and a new message appears live (server-sent events).
    d.set_window_size(1280, 900)
    d.get(site.base + "/console/events")
    assert msg_id in d.find_element(By.ID, "events").text
    wait_text(d, "live-status", "Live")
    new_id = site.inject("key-acme", "late@dest.test", "arrives while watching")
    WebDriverWait(d, 15).until(
        ec.text_to_be_present_in_element((By.ID, "events"), new_id))
    shot(d, shots, "events")

    # A phone's width: the same page, still readable (tables scroll inside their box).
    d.set_window_size(390, 844)
    d.get(site.base + "/console/queue")
    assert msg_id in message_ids_on_page(d)
    overflow = d.execute_script(
        "return document.documentElement.scrollWidth > window.innerWidth + 1")
    assert not overflow, "the page scrolls sideways at phone width"
    shot(d, shots, "queue-phone")
    d.set_window_size(1280, 900)


def test_a_viewer_sees_the_queue_but_may_not_act(site, chrome, queued, shots):
    d = chrome
    sign_in(d, site, "vera")
    msg_id = queued["acme"]
    d.get(f"{site.base}/console/queue/{msg_id}")
    assert d.find_element(By.ID, "message-state").text == "queued"
    assert not d.find_elements(By.ID, "hold")  # no action offered
    d.get(f"{site.base}/console/queue/{msg_id}/hold")
    assert "may look, not act" in d.find_element(By.ID, "error").text
    shot(d, shots, "viewer-refused")
    # Nor through a well-formed POST (its own session's CSRF token) sent from the page.
    status = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.querySelector('input[name=csrf]').value;
        fetch(arguments[0], {method: 'POST', body: new URLSearchParams({csrf: token})})
            .then(r => done(r.status));""", f"/console/queue/{msg_id}/hold")
    assert status == 403
    assert site.admin(f"/api/v1/admin/queue/{msg_id}")["state"] == "queued"


def test_a_tenant_account_sees_only_its_own_tenant(site, chrome, queued, shots):
    d = chrome
    sign_in(d, site, "acme")
    assert d.find_element(By.TAG_NAME, "h1").text == "Overview: acme"
    shot(d, shots, "tenant-overview")
    d.get(site.base + "/console/queue")
    ids = message_ids_on_page(d)
    assert queued["acme"] in ids and queued["globex"] not in ids
    assert "globex" not in d.find_element(By.ID, "qshape").text
    shot(d, shots, "tenant-queue")
    d.get(site.base + "/console/tenants")
    names = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#tenants tbody th")]
    assert names == ["acme"]
    # Its credits, as the admin API added them, and its own suppression list (not
    # another tenant's).
    site.admin("/api/v1/admin/tenants/acme/credits", {"amount": 500, "paid": True})
    site.admin("/api/v1/suppressions", {"address": "gone@dest.test", "scope": "acme",
                                        "reason": "unsubscribe"})
    site.admin("/api/v1/suppressions", {"address": "other@dest.test", "scope": "globex",
                                        "reason": "manual"})
    d.find_element(By.LINK_TEXT, "acme").click()
    assert d.find_element(By.ID, "credits-balance").text == "500"
    listed = d.find_element(By.ID, "suppressions").text
    assert "gone@dest.test: unsubscribe" in listed and "other@dest.test" not in listed
    assert not d.find_elements(By.ID, "suspend")  # a portal account acts on nothing
    shot(d, shots, "tenant-account")
    d.get(f"{site.base}/console/queue/{queued['globex']}")
    assert "No message" in d.find_element(By.ID, "error").text
    d.get(site.base + "/console/tenants/globex")
    assert "No tenant" in d.find_element(By.ID, "error").text
    d.get(site.base + "/console/paths")
    assert "operator's" in d.find_element(By.ID, "error").text
    d.get(site.base + "/console/events?tenant=globex")  # the filter cannot widen the view
    text = d.find_element(By.ID, "events").text
    assert queued["acme"] in text and queued["globex"] not in text
    shot(d, shots, "tenant-events")


def test_an_admin_creates_an_operator_who_signs_in_and_may_not_manage_accounts(
        site, chrome, shots):
    d = chrome
    d.set_window_size(1280, 900)
    sign_in(d, site, "ada")
    d.find_element(By.ID, "nav-accounts").click()
    assert d.find_element(By.TAG_NAME, "h1").text == "Console accounts"
    shot(d, shots, "accounts")
    d.find_element(By.ID, "add-account").click()
    assert "Confirm: add" in d.find_element(By.TAG_NAME, "h1").text
    d.find_element(By.ID, "field-name").send_keys("oscar")
    Select(d.find_element(By.ID, "field-role")).select_by_visible_text("operator")
    d.find_element(By.ID, "field-password").send_keys(PASSWORD)
    shot(d, shots, "accounts-add")
    d.find_element(By.ID, "confirm").click()
    wait_text(d, "done", "added oscar (operator)")
    row = d.find_element(By.CSS_SELECTOR, "#accounts tr[data-account=oscar]").text
    assert "operator" in row and "runtime" in row
    # Config accounts are listed, without actions.
    assert "config file" in d.find_element(
        By.CSS_SELECTOR, "#accounts tr[data-account=olga]").text
    [rec] = [a for a in site.admin("/api/v1/admin/console/accounts")["accounts"]
             if a["name"] == "oscar"]
    assert (rec["role"], rec["by"]) == ("operator", "console:ada")
    shot(d, shots, "accounts-added")

    sign_in(d, site, "oscar")
    assert d.find_element(By.TAG_NAME, "h1").text == "Overview"
    assert not d.find_elements(By.ID, "nav-accounts")
    d.get(site.base + "/console/accounts/add")
    assert "may not manage accounts" in d.find_element(By.ID, "error").text
    shot(d, shots, "operator-refused-accounts")
    # Nor by a well-formed POST with the operator's own CSRF token.
    status = d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.querySelector('input[name=csrf]').value;
        fetch(arguments[0], {method: 'POST', body: new URLSearchParams(
            {csrf: token, name: 'mallory', role: 'admin', password: arguments[1]})})
            .then(r => done(r.status));""", "/console/accounts/add", PASSWORD)
    assert status == 403
    names = {a["name"] for a in site.admin("/api/v1/admin/console/accounts")["accounts"]}
    assert "mallory" not in names

    # The admin removes oscar: his session ends at his next page.
    oscar_cookies = d.get_cookies()
    sign_in(d, site, "ada")
    d.get(site.base + "/console/accounts/oscar/remove")
    d.find_element(By.ID, "confirm").click()
    wait_text(d, "done", "removed oscar")
    d.delete_all_cookies()
    d.get(site.base + "/console/sign-in")
    for c in oscar_cookies:
        d.add_cookie({k: c[k] for k in ("name", "value", "path") if k in c})
    d.get(site.base + "/console/queue")
    assert d.current_url.endswith("/console/sign-in")


PAGES = (("overview", "/console/"), ("queue", "/console/queue"),
         ("tenants", "/console/tenants"), ("tenant", "/console/tenants/acme"),
         ("paths", "/console/paths"), ("events", "/console/events"),
         ("accounts", "/console/accounts"))
# What a keyboard user must be able to reach on every page.
_FOCUSABLE = """
    const all = [...document.querySelectorAll(
        'a[href], button, input:not([type=hidden]), select, textarea, summary')];
    all.forEach((e, i) => e.dataset.k = i);
    return all.length;"""


def test_every_page_by_keyboard_at_1280_px_and_at_phone_width(site, chrome, queued, shots):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    d = chrome
    sign_in(d, site, "ada")
    for name, path in PAGES:
        for width, height in ((1280, 900), (390, 844)):
            d.set_window_size(width, height)
            d.get(site.base + path)
            assert "Error" not in d.title, path
            overflow = d.execute_script(
                "return document.documentElement.scrollWidth > window.innerWidth + 1")
            assert not overflow, f"{path} scrolls sideways at {width} px"
            shot(d, shots, f"{name}-{width}px")
        # Tab from the top of the page: the skip link first, then every link, button and
        # field in turn, none left out.
        d.set_window_size(1280, 900)
        d.get(site.base + path)
        n = d.execute_script(_FOCUSABLE)
        reached = []
        for _ in range(n + 3):
            ActionChains(d).send_keys(Keys.TAB).perform()
            reached.append(d.execute_script("return document.activeElement.dataset.k"))
        assert reached[0] == "0" and "Skip" in d.find_element(
            By.CSS_SELECTOR, "[data-k='0']").get_attribute("textContent"), path
        assert {str(i) for i in range(n)} <= set(reached), (path, n, reached)
        # The skip link leads past the navigation, to the page itself.
        d.get(site.base + path)
        ActionChains(d).send_keys(Keys.TAB).send_keys(Keys.ENTER).perform()
        assert d.current_url.endswith("#main"), path


def test_the_overview_s_figures_follow_the_queue_without_a_reload(tmp_path, chrome, shots):
    """[console] overview_refresh: the open Overview fetches its figures again, so mail
    injected while it is open shows up in it without the operator reloading."""
    toml = console_toml().replace("[console]\n", '[console]\noverview_refresh = "1s"\n', 1)
    (tmp_path / "mta").mkdir()
    mta = MtaProcess(tmp_path / "mta", toml, delivery_port=free_port())
    try:
        mta.start()
        live = Site(mta)
        sign_in(chrome, live, "olga")
        chrome.get(live.base + "/console/")
        wait_text(chrome, "queued-messages", "0")
        chrome.execute_script("window.stayed = 1; "
                              "document.getElementById('queued-messages').dataset.seen = 1")
        for i in range(3):
            live.inject("key-acme", f"r{i}@dest.test", f"while open {i}")
        # The counts behind the page are at most 10 s old (mta.console.snapshots).
        WebDriverWait(chrome, 25).until(
            ec.text_to_be_present_in_element((By.ID, "queued-messages"), "3"))
        # The same page, its figures replaced in place (not a navigation).
        assert chrome.execute_script(
            "return window.stayed === 1 && !document.getElementById('queued-messages')"
            ".dataset.seen")
        shot(chrome, shots, "overview-refreshed")
    finally:
        mta.kill()
