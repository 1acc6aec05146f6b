"""The ops page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
with selenium): log in with the form, read what a person would see (alerts, the savings
chart, queue and batches), filter and page the routing log, log out. A screenshot is
saved for a human to look at. Run with ``tests/browser/run.sh``.

Chromium treats ``http://127.0.0.1`` as a secure context, so the proxy's ``Secure``
session cookie is kept over plain HTTP there; the test checks it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.browser.ops_stack import ADMIN_KEY, CLIENT_KEY, SECRETS, OpsStack, ops_stack

webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.remote.webelement import WebElement  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,2200",
)  # fmt: skip


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with ops_stack(tmp_path_factory.mktemp("browser")) as stack:
        yield stack


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium or chromedriver missing: run tests/browser/run.sh")
    profile = tempfile.mkdtemp(prefix="costroute-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _by_id(driver: WebDriver, element_id: str) -> WebElement:
    return driver.find_element(By.ID, element_id)


def _navigate(driver: WebDriver, element: WebElement) -> None:
    """Click something that loads a new page, and wait until the old one is gone."""
    element.click()
    WebDriverWait(driver, 10).until(expected_conditions.staleness_of(element))
    WebDriverWait(driver, 10).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def _submit_login(driver: WebDriver, key: str) -> None:
    field = _by_id(driver, "key")
    field.clear()
    field.send_keys(key)
    _navigate(driver, _by_id(driver, "login"))


def _login(ops: OpsStack, driver: WebDriver) -> None:
    driver.get(f"{ops.url}/admin")
    if driver.current_url.endswith("/admin/login"):
        _submit_login(driver, ADMIN_KEY)
        assert driver.current_url == f"{ops.url}/admin"


@pytest.fixture
def page(ops: OpsStack, browser: WebDriver) -> WebDriver:
    _login(ops, browser)
    return browser


def _log_rows(driver: WebDriver) -> list[list[str]]:
    """The rendered text of each log cell, in one round trip (not 550)."""
    rows: list[list[str]] = driver.execute_script(
        "return Array.from(document.querySelectorAll('#log-table tbody tr'),"
        " row => Array.from(row.cells, cell => cell.innerText.trim()))"
    )
    return rows


def _artifacts(tmp_path: Path) -> Path:
    wanted = os.environ.get("COSTROUTE_BROWSER_ARTIFACTS")
    target = Path(wanted) if wanted else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    return target


def test_login_refuses_wrong_keys_then_keeps_a_secure_session_cookie(
    ops: OpsStack, browser: WebDriver
) -> None:
    browser.delete_all_cookies()
    browser.get(f"{ops.url}/admin")
    assert browser.current_url == f"{ops.url}/admin/login"
    assert "Log in with an admin key" in browser.find_element(By.TAG_NAME, "main").text
    _submit_login(browser, "sk-wrong-key")
    assert _by_id(browser, "key").is_displayed()
    assert "Incorrect key." in browser.find_element(By.CSS_SELECTOR, "p.error").text
    _submit_login(browser, CLIENT_KEY)
    assert "not an admin key" in browser.find_element(By.CSS_SELECTOR, "p.error").text
    _submit_login(browser, ADMIN_KEY)
    assert browser.current_url == f"{ops.url}/admin"
    assert _by_id(browser, "who").text == "ops"
    [cookie] = [c for c in browser.get_cookies() if c["name"] == "costroute_ops"]
    assert cookie["secure"] is True
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/admin"
    assert cookie["value"] != ADMIN_KEY
    assert browser.execute_script("return window.isSecureContext") is True


def test_what_a_person_sees(ops: OpsStack, page: WebDriver, tmp_path: Path) -> None:
    alerts = page.find_elements(By.CSS_SELECTOR, "#alerts li")
    texts = [alert.text for alert in alerts]
    assert len(texts) == 4, texts
    assert any("cb_stuck" in t and "8h" in t for t in texts)
    assert any("50% of 8 batch lines failed" in t for t in texts)
    assert any("oldest has waited 2h" in t for t in texts)
    assert any("hooks.test" in t and "4 tries in a row" in t for t in texts)
    assert all(t.startswith("WARNING") for t in texts)  # text-transform: uppercase is applied
    chart = _by_id(page, "savings-chart")
    assert chart.is_displayed()
    assert chart.size["width"] > 300
    assert chart.size["height"] > 80
    bars = page.find_elements(By.CSS_SELECTOR, "#savings-chart rect.bar")
    assert len(bars) == 14
    tall = [bar for bar in bars if bar.size["height"] > 5]
    assert 5 <= len(tall) <= 11  # the seeded days with batch or flex savings
    assert _by_id(page, "savings-total").text.startswith("Saved $")
    queue = _by_id(page, "queue").text
    assert "3\nqueued" in queue
    assert "2h\noldest queued" in queue
    batches = _by_id(page, "batch-table").text
    assert "cb_stuck" in batches
    assert "batch_prov_done" in batches
    assert "4 / 4 / 8" in batches
    assert len(_log_rows(page)) == 50
    source = page.page_source
    for secret in SECRETS:
        assert secret not in source
    # No CSP violation, no failed resource (the refused logins of the first test aside).
    severe = [
        e["message"]
        for e in page.get_log("browser")
        if e["level"] == "SEVERE" and "/admin/login" not in e["message"]
    ]
    assert severe == []
    shot = _artifacts(tmp_path) / "ops_page.png"
    page.set_window_size(1400, page.execute_script("return document.body.scrollHeight") + 40)
    assert page.save_screenshot(str(shot))
    assert shot.stat().st_size > 20_000


def test_filtering_and_paging_the_log(ops: OpsStack, page: WebDriver) -> None:
    for name, value in (("lane", "batch"), ("key", "team-a")):
        field = _by_id(page, f"f-{name}")
        field.clear()
        field.send_keys(value)
    _navigate(page, _by_id(page, "apply"))
    assert "lane=batch" in page.current_url
    rows = _log_rows(page)
    expected = ops.fetch("SELECT id FROM routes WHERE lane = 'batch' AND key_name = 'team-a'")
    assert len(rows) == len(expected) > 0
    assert {(row[1], row[4]) for row in rows} == {("team-a", "batch")}
    assert _by_id(page, "f-lane").get_attribute("value") == "batch"  # the form remembers
    assert page.find_elements(By.ID, "older") == []  # one page only
    _by_id(page, "f-lane").clear()
    _by_id(page, "f-key").clear()
    status = _by_id(page, "f-status")
    status.clear()
    status.send_keys("failed")
    _navigate(page, _by_id(page, "apply"))
    assert "status=failed" in page.current_url
    failed = _log_rows(page)
    assert failed
    assert {row[5] for row in failed} <= {"429", "502", "400"}
    _navigate(page, page.find_element(By.LINK_TEXT, "Clear"))
    first = _log_rows(page)
    _navigate(page, _by_id(page, "older"))
    assert "after=" in page.current_url
    second = _log_rows(page)
    assert len(second) == 50
    assert second[0] != first[0]
    assert second[0][0] <= first[-1][0]  # older rows (times sort as text)
    _navigate(page, _by_id(page, "newer"))
    assert _log_rows(page) == first


def test_logout_ends_the_session(ops: OpsStack, page: WebDriver) -> None:
    _navigate(page, _by_id(page, "logout"))
    assert page.current_url.endswith("/admin/login")
    assert [c for c in page.get_cookies() if c["name"] == "costroute_ops"] == []
    page.get(f"{ops.url}/admin")
    assert page.current_url.endswith("/admin/login")
