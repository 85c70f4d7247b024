"""The web page of `seal serve`, in a real headless browser (Debian's Chromium driven by Playwright):
paste a document, watch it learned with its self-edit, ask a question, forget the document."""

import shutil
import time

import httpx
import pytest

from tests.test_server import ADMIN, free_port, start_server
from tests.test_serving import ZOBERRA

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def test_teach_ask_and_forget_in_the_browser(browser, tmp_path):
    port = free_port()
    server = start_server(tmp_path / "state", port)
    url = f"http://127.0.0.1:{port}"
    try:
        key = httpx.post(f"{url}/v1/tenants", headers={"Authorization": f"Bearer {ADMIN}"}).json()["api_key"]
        page = browser.new_page()
        page.goto(url)
        page.fill("#key", key)
        page.click("#save-key")
        page.click("#learn")  # nothing pasted yet
        page.wait_for_function("document.querySelector('#message').textContent.includes('empty')")

        page.fill("#title", "Zoberra cake")
        page.fill("#text", ZOBERRA)
        page.click("#learn")
        row = page.locator("#documents tr", has_text="Zoberra cake")
        row.wait_for(timeout=30_000)
        deadline = time.time() + 180
        while "learned" not in row.locator("td").nth(1).inner_text():
            assert time.time() < deadline, "not learned in time"
            page.wait_for_timeout(200)
        assert row.locator(".self-edit").inner_text().strip()  # the self-edit it wrote is shown

        page.fill("#question", "Where is Zoberra cake from?")
        page.click("#ask")
        page.wait_for_function("document.querySelector('#answer').textContent.length > 0", timeout=60_000)

        row.locator("button.forget").click()
        page.locator("#documents tr", has_text="Zoberra cake").wait_for(state="detached", timeout=30_000)
        listed = httpx.get(f"{url}/v1/documents", headers={"Authorization": f"Bearer {key}"}).json()["data"]
        assert listed == []
        assert page.locator("#message").inner_text() == ""
    finally:
        server.terminate()
        server.wait(timeout=30)
