"""The gateway's status page, as a person sees it: a real headless Chromium (Debian's package, which
./dev test installs) loads `/`, and the live workers and the throughput chart appear, with no user
text, key or Redis address anywhere on it."""

import os
import shutil
import threading

import pytest

from tests.conftest import KEY, MODEL

SECRET_TEXT = "private customer sentence 41c7"


@pytest.fixture
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        message = "Debian's chromium and chromium-driver are not installed (./dev test installs them)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,1100"):
        options.add_argument(flag)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


def test_the_status_page_shows_live_workers_and_the_chart(browser, gateway, service, tmp_path):
    from openai import OpenAI
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    client = OpenAI(base_url=f"{gateway}/v1", api_key=KEY, max_retries=0)
    stop = threading.Event()

    def traffic() -> None:  # the fleet is busy while the page samples it
        while not stop.is_set():
            client.embeddings.create(model=MODEL, input=[SECRET_TEXT, "another text"])

    worker = threading.Thread(target=traffic)
    worker.start()
    queue = service.settings.queue

    def ready(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "table.workers tr")
        charts = driver.find_elements(By.CSS_SELECTOR, "canvas.chart")
        return len(rows) >= 3 and charts and int(charts[0].get_attribute("data-points") or 0) >= 2

    try:
        browser.get(f"{gateway}/")
        # the page redraws every few seconds: an element found just before a redraw goes stale
        WebDriverWait(browser, 60, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException]).until(ready)
    finally:
        stop.set()
        worker.join()
    page = browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(tmp_path / "status-page.png"))
    print(f"screenshot: {tmp_path / 'status-page.png'}")
    assert f"queue {queue}" in page
    assert "workers (2)" in page
    assert page.count(MODEL) >= 2  # one row per live worker
    assert "CPUExecutionProvider" in page
    assert "texts/s" in page
    source = browser.page_source
    for secret in (SECRET_TEXT, KEY, service.settings.redis_url):
        assert secret not in source
