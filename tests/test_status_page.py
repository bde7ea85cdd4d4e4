"""The gateway's status page, as a person sees it: a real headless Chromium (Debian's package, which
./dev test installs) loads `/`, and the live workers, the throughput chart and a running batch appear,
with no user text, key, Redis address or batch detail beyond its counts anywhere on it."""

import json
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


def batch_of_secrets(client) -> str:  # type: ignore[no-untyped-def]
    """A batch running while the page is open: its texts, custom_ids, file name and metadata must not show."""
    lines = [
        {
            "custom_id": f"secret-id-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": f"{SECRET_TEXT} {i}"},  # each new: no line comes from the cache
        }
        for i in range(20_000)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    upload = client.files.create(file=("secret-name.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/embeddings",
        completion_window="24h",
        metadata={"secret": "secret-meta-value"},
    )
    return str(batch.id)


def test_the_status_page_shows_live_workers_the_chart_and_batches(browser, gateway, service, tmp_path):
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
    batch_id = batch_of_secrets(client)

    def ready(driver):
        rows = driver.find_elements(By.CSS_SELECTOR, "table.workers tr")
        charts = driver.find_elements(By.CSS_SELECTOR, "canvas.chart")
        batches = driver.find_elements(By.CSS_SELECTOR, "table.batches tr")
        return len(rows) >= 3 and charts and int(charts[0].get_attribute("data-points") or 0) >= 2 and batches

    try:
        browser.get(f"{gateway}/")
        # the page redraws every few seconds: an element found just before a redraw goes stale
        WebDriverWait(browser, 60, poll_frequency=0.5, ignored_exceptions=[StaleElementReferenceException]).until(ready)
        page = browser.find_element(By.TAG_NAME, "body").text
        source = browser.page_source
        browser.save_screenshot(str(tmp_path / "status-page.png"))
    finally:
        stop.set()
        worker.join()
        client.batches.cancel(batch_id)
    print(f"screenshot: {tmp_path / 'status-page.png'}")
    assert f"queue {queue}" in page
    assert "workers (2)" in page
    assert page.count(MODEL) >= 2  # one row per live worker
    assert "CPUExecutionProvider" in page
    assert "texts/s" in page
    assert "batches running (1)" in page and "/ 20,000" in page
    for secret in (
        SECRET_TEXT,
        KEY,
        service.settings.redis_url,
        "secret-id-",
        "secret-name",
        "secret-meta-value",
        batch_id,
    ):
        assert secret not in source
