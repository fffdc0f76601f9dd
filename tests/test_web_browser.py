"""The web page in a real browser: Debian's chromium, headless, driven by selenium through
/usr/bin/chromedriver (never a downloaded driver). It logs in with a one-time code, makes a
folder and browses, uploads a 20 MiB file through the resumable protocol, downloads it
byte-identical, restores an old revision from the file's history, shares a folder with a
second user who then sees it, and makes a public link that is read without a token.

Set CIRRUS_SCREENSHOTS=docs/web to refresh the screenshots of docs/web.md.
"""

import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.web import login_code

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
BIG = 20 * 1024 * 1024
WAIT_S = 30.0

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(
        f"the browser test needs Debian's chromium and chromium-driver ({CHROMIUM}, "
        f"{CHROMEDRIVER}): apt-get install chromium chromium-driver",
        allow_module_level=True,
    )

from selenium.common.exceptions import (  # noqa: E402
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

# A file dropped on the upload area, as a drag from the desktop delivers it.
DROP_A_FILE = """
const files = new DataTransfer();
files.items.add(new File(["dropped by drag and drop\\n"], "dropped <1>.txt"));
const zone = document.getElementById("drop-zone");
zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: files, cancelable: true}));
zone.dispatchEvent(new DragEvent("drop", {dataTransfer: files, cancelable: true}));
"""


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium must not look for a driver online
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1000,760",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(tmp_path / "downloads"),
            "download.prompt_for_download": False,
        },
    )
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    try:
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(tmp_path / "downloads")},
        )
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, what: Callable[[webdriver.Chrome], object]) -> object:
    try:
        waiting = WebDriverWait(
            driver,
            WAIT_S,
            poll_frequency=0.2,
            ignored_exceptions=(StaleElementReferenceException,),  # the page was replaced
        )
        return waiting.until(lambda d: _unless_replaced(what, d))
    except TimeoutException:
        shown = driver.current_url + "\n" + driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"the page did not get there in {WAIT_S}s:\n{shown}") from None


def _unless_replaced(
    what: Callable[[webdriver.Chrome], object], driver: webdriver.Chrome
) -> object:
    """`what`, or False (try again) when an element it holds was detached mid-call: chromedriver
    reports that as a plain inspector error rather than a stale element."""
    try:
        return what(driver)
    except WebDriverException as error:
        if "does not belong to the document" in (error.msg or ""):
            return False
        raise


def downloaded(folder: Path, name: str) -> bytes:
    """The file once the browser has finished writing it (bounded wait)."""
    target, deadline = folder / name, time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        partial = list(folder.glob("*.crdownload")) if folder.exists() else []
        if target.exists() and not partial:
            return target.read_bytes()
        time.sleep(0.2)
    raise AssertionError(f"{name} was not downloaded within {WAIT_S}s")


class Shots:
    """Screenshots into CIRRUS_SCREENSHOTS when set (docs/web.md shows them)."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self.folder = os.environ.get("CIRRUS_SCREENSHOTS")

    def take(self, name: str) -> None:
        if self.folder:
            Path(self.folder).mkdir(parents=True, exist_ok=True)
            assert self.driver.save_screenshot(str(Path(self.folder) / f"{name}.png"))


def upload(driver: webdriver.Chrome, files: list[Path], size_shown: str) -> None:
    """Choose files in the upload field; the page reloads once every upload is done."""
    driver.find_element(By.ID, "upload-input").send_keys("\n".join(map(str, files)))

    def finished(d: webdriver.Chrome) -> bool:
        failed = d.find_elements(By.CSS_SELECTOR, "#upload-list li.failed")
        assert not failed, failed[0].text
        table = d.find_element(By.CSS_SELECTOR, "table.entries").text
        return not d.find_elements(By.CSS_SELECTOR, "#upload-list li") and size_shown in table

    wait_for(driver, finished)


def log_in(driver: webdriver.Chrome, server: ServerProcess, user: str) -> None:
    driver.find_element(By.ID, "code").send_keys(login_code(server, user), Keys.ENTER)
    wait_for(driver, lambda d: d.find_elements(By.ID, "upload-input"))


def open_share(driver: webdriver.Chrome, name: str) -> object:
    """The row of an entry of the folder shown, with its Share disclosure opened."""
    row = driver.find_element(By.XPATH, f"//tr[.//td[@class='name']/a[text()='{name}']]")
    row.find_element(By.XPATH, ".//summary[starts-with(normalize-space(.), 'Share')]").click()
    return row


def share_and_link(driver: webdriver.Chrome, server: ServerProcess, shots: Shots) -> None:
    """alice shares a folder with bob, who sees it in his drive; a public link to a file
    in it is read without a token."""
    driver.find_element(By.LINK_TEXT, "Files").click()
    row = wait_for(driver, lambda d: open_share(d, "Reports <2026>"))
    Select(row.find_element(By.NAME, "access")).select_by_visible_text("Read and write")
    row.find_element(By.NAME, "user").send_keys("bob", Keys.ENTER)  # from the keyboard
    wait_for(driver, lambda d: "read and write" in d.find_element(By.TAG_NAME, "table").text)
    driver.find_element(By.LINK_TEXT, "/Reports <2026>").click()
    row = wait_for(driver, lambda d: open_share(d, "notes.txt"))
    Select(row.find_element(By.NAME, "expires")).select_by_visible_text("1 day")
    row.find_element(By.XPATH, ".//button[text()='Make a link']").click()
    url = wait_for(driver, lambda d: d.find_elements(By.ID, "made-url"))[0].get_attribute("value")
    with httpx.Client(trust_env=False, timeout=WAIT_S) as anyone:  # no token, no cookie
        assert anyone.get(url).text == "several files at once\n"
    shots.take("sharing")
    driver.find_element(By.CSS_SELECTOR, "form.logout button").click()
    wait_for(driver, lambda d: d.find_elements(By.ID, "code"))
    log_in(driver, server, "bob")
    table = driver.find_element(By.CSS_SELECTOR, "table.entries").text
    assert "Reports <2026>" in table and "shared by alice, read and write" in table
    driver.find_element(By.LINK_TEXT, "Reports <2026>").click()
    wait_for(driver, lambda d: d.find_elements(By.LINK_TEXT, "notes.txt"))
    shots.take("shared")


def test_log_in_upload_browse_download_and_restore(
    browser: webdriver.Chrome, tmp_path: Path
) -> None:
    shots = Shots(browser)
    original = os.urandom(BIG)
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    (tmp_path / "v1" / "big.bin").write_bytes(original)
    (tmp_path / "v1" / "notes.txt").write_text("several files at once\n")
    (tmp_path / "v2" / "big.bin").write_bytes(b"a newer, smaller revision\n")
    with ServerProcess(tmp_path / "server") as server:
        server.create_user("alice")
        server.create_user("bob")
        browser.get(f"{server.url}/")
        code = browser.find_element(By.ID, "code")  # the log-in form, found by its label's id
        code.send_keys(login_code(server, "alice"))
        shots.take("login")
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "upload-input"))
        assert browser.get_cookie("cirrus_session")["httpOnly"] is True

        browser.find_element(By.ID, "new-folder").send_keys("Reports <2026>", Keys.ENTER)
        wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "Reports <2026>"))[0].click()
        crumb = wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[aria-current]"))
        assert crumb[0].text == "Reports <2026>"

        upload(browser, [tmp_path / "v1" / "big.bin", tmp_path / "v1" / "notes.txt"], "20.0 MiB")
        assert browser.find_elements(By.LINK_TEXT, "notes.txt")
        browser.execute_script(DROP_A_FILE)
        wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "dropped <1>.txt"))
        shots.take("files")
        browser.find_element(By.LINK_TEXT, "big.bin").click()
        assert downloaded(tmp_path / "downloads", "big.bin") == original
        (tmp_path / "downloads" / "big.bin").unlink()

        upload(browser, [tmp_path / "v2" / "big.bin"], "26 bytes")
        browser.find_element(By.PARTIAL_LINK_TEXT, "History").click()
        restore = wait_for(
            browser, lambda d: d.find_elements(By.CSS_SELECTOR, "[aria-label='Restore revision 1']")
        )
        shots.take("history")
        restore[0].click()
        wait_for(browser, lambda d: "3 (current)" in d.find_element(By.TAG_NAME, "table").text)
        browser.find_element(By.LINK_TEXT, "My drive").click()
        wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "Reports <2026>"))[0].click()
        wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "big.bin"))[0].click()
        assert downloaded(tmp_path / "downloads", "big.bin") == original

        browser.find_element(By.CSS_SELECTOR, "[aria-label='Delete big.bin']").click()
        # The delete loads the folder again: a link found before that would go stale.
        wait_for(browser, lambda d: not d.find_elements(By.LINK_TEXT, "big.bin"))
        browser.find_element(By.LINK_TEXT, "Trash").click()
        wait_for(
            browser,
            lambda d: (
                "/Reports <2026>/big.bin" in d.page_source.replace("&lt;", "<").replace("&gt;", ">")
            ),
        )
        shots.take("trash")
        share_and_link(browser, server, shots)
        browser.set_window_size(390, 844)  # a phone-sized screen
        browser.find_element(By.LINK_TEXT, "Files").click()
        wait_for(browser, lambda d: d.find_elements(By.ID, "upload-input"))
        shots.take("phone")
        assert server.errors_logged() == []
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
