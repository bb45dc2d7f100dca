"""The page to try the classifier, in a real browser: Debian's chromium under Selenium, against the
real server with the demo model, and through `client.py page` in front of SageMaker's invoke path.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from helpers.sample_data import opened, phone_photo
from helpers.serving import RuntimeProxy, ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
CLIENT = ROOT / "endpoint" / "client.py"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=900,1030")
# What chromium logs for every fetch answered 4xx/5xx: expected where a test sends a bad photo.
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")
SCREENSHOT = "PAGE_SCREENSHOT"  # set to a path (docs/page.png) to keep the README's screenshot


@pytest.fixture(scope="module")
def browser():
    """Headless chromium with a fresh profile; missing, it fails the tests as Docker does."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.fail("chromium or chromedriver not found: run ci/browser.sh (apt-get install "
                    "chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="page-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    session = webdriver.Chrome(options=options, service=Service(driver))
    try:
        yield session
    finally:
        session.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def runtime(demo_server):
    with RuntimeProxy(demo_server) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def page_server(runtime, tmp_path_factory):
    """`client.py page` for endpoint 'flowers', its boto3 pointed at the stand-in runtime."""
    port = free_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": runtime.url, "AWS_REGION": "eu-west-1",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret"}
    log = tmp_path_factory.mktemp("page_server") / "client.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, str(CLIENT), "page", "--endpoint", "flowers",
                                    "--port", str(port)], env=env, stdout=out,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log.read_text()
            try:
                if requests.get(url + "/", timeout=2).ok:
                    break
            except requests.RequestException:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def open_page(browser, url: str) -> None:
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(
        lambda b: not text(b, "model").startswith("Asking")
        and b.find_elements(By.CSS_SELECTOR, "#gallery button"))
    browser.get_log("browser")  # from here on, only this test's messages


def text(browser, element_id: str) -> str:
    return browser.find_element(By.ID, element_id).text


def call(browser) -> str | None:
    """Which of the page's calls it shows the answer to (None: none yet)."""
    return browser.find_element(By.ID, "status").get_attribute("data-call")


def answer(browser, before: str | None = None) -> list[tuple[str, float]]:
    """Wait for the answer to a call after `before` and read its bars:
    [(name, bar width in % of the track)], or raise with the page's error."""
    try:
        WebDriverWait(browser, 60).until(lambda b: call(b) not in (None, before))
    except TimeoutException:
        raise AssertionError(f"no answer; the page says {text(browser, 'status')!r}") from None
    error = browser.find_element(By.ID, "error")
    if error.is_displayed():
        raise AssertionError(f"the page shows an error: {error.text}")
    return browser.execute_script("""
        return [...document.querySelectorAll('#predictions li')].map(li => [
            li.querySelector('.name').textContent,
            100 * li.querySelector('.bar span').offsetWidth
                / li.querySelector('.bar').offsetWidth]);
    """)


def shown_error(browser, before: str | None = None) -> str:
    WebDriverWait(browser, 60).until(lambda b: call(b) not in (None, before))
    assert browser.find_element(By.ID, "error").is_displayed(), text(browser, "status")
    return text(browser, "error")


def upload(browser, path: Path) -> None:
    browser.find_element(By.ID, "file").send_keys(str(path))


def set_k(browser, k: int) -> None:
    field = browser.find_element(By.ID, "k")
    field.clear()
    field.send_keys(str(k), Keys.TAB)  # `change` fires as the field loses focus


def console_errors(browser, allowed: re.Pattern | None = None) -> list[str]:
    return [entry["message"] for entry in browser.get_log("browser")
            if entry["level"] == "SEVERE" and not (allowed and allowed.search(entry["message"]))]


def server_answer(server, data: bytes, k: int) -> list[dict]:
    response = server.post(data, "image/jpeg", **{"X-Amzn-SageMaker-Custom-Attributes":
                                                  f"top_k={k}"})
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def test_the_page_routes_and_contract(demo_server):
    page = requests.get(demo_server.url + "/", timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "connect-src 'self'" in page.headers["Content-Security-Policy"]
    # self-contained: nothing is fetched from anywhere but the page's own server
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//|@import|url\(""", page.text)
    assert 'type="file"' in page.text and "capture=" in page.text
    info = requests.get(demo_server.url + "/model-info", timeout=10).json()
    assert info == {"arch": "efficientnet_lite0", "classes": 102, "names": True,
                    "precision": "fp32", "backend": "torch", "device": info["device"],
                    "demo": True, "top_k": 5}
    assert info["device"].startswith("cpu")
    names = requests.get(demo_server.url + "/samples", timeout=10).json()["samples"]
    payloads = sorted(p.name for p in (ROOT / "local_test" / "payloads").iterdir())
    assert names == payloads
    sample = requests.get(demo_server.url + "/samples/rose.jpg", timeout=10)
    assert sample.headers["Content-Type"] == "image/jpeg"
    assert sample.content == (ROOT / "local_test" / "payloads" / "rose.jpg").read_bytes()
    for path in ("/samples/nope.jpg", "/samples/..%2Fcommon.sh", "/samples/../serve"):
        response = requests.get(demo_server.url + path, timeout=10)
        assert response.status_code == 404 and "error" in response.json(), path


def test_a_flower_photo_shows_its_name_k_bars_and_who_answered(browser, demo_server, tmp_path,
                                                               record_property):
    open_page(browser, demo_server.url)
    assert re.fullmatch(r"Answered by efficientnet_lite0 \(102 classes\) in fp32 on cpu .*: "
                        r"the bundled demo model", text(browser, "model"))
    photo = ROOT / "local_test" / "payloads" / "sunflower.jpg"
    set_k(browser, 3)
    upload(browser, photo)
    bars = answer(browser)
    expected = server_answer(demo_server, photo.read_bytes(), 3)  # small: sent as it is
    assert [name for name, _ in bars] == [p["label"] for p in expected]
    assert bars[0][0] == "sunflower"
    for (_, width), p in zip(bars, expected):
        assert width == pytest.approx(100 * p["probability"], abs=1.5)
    assert re.fullmatch(r"\d+ ms", text(browser, "latency"))
    assert browser.find_element(By.ID, "photo").is_displayed()
    browser.execute_script("document.activeElement.blur()")
    shot = tmp_path / "page.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    record_property("screenshot", str(shot))
    if os.environ.get(SCREENSHOT):  # 256 colours: a third of the bytes, for the repository
        palette = Image.open(shot).convert("RGB").quantize(256, Image.Quantize.MAXCOVERAGE)
        palette.save(ROOT / os.environ[SCREENSHOT], optimize=True)
    before = call(browser)
    set_k(browser, 7)  # k is adjustable: the photo is asked about again
    assert len(answer(browser, before)) == 7
    assert console_errors(browser) == []


def test_a_non_image_shows_the_servers_error_message(browser, demo_server, tmp_path):
    open_page(browser, demo_server.url)
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a flower\n")
    upload(browser, notes)
    expected = demo_server.post(notes.read_bytes(), "text/plain").json()["error"]
    assert shown_error(browser) == expected and "unsupported Content-Type" in expected
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not an image at all")
    before = call(browser)
    upload(browser, fake)
    expected = demo_server.post(fake.read_bytes(), "image/jpeg").json()["error"]
    assert shown_error(browser, before) == expected and "not a readable image" in expected
    assert console_errors(browser, FAILED_LOAD) == []


def test_keyboard_only_a_sample_from_the_gallery_on_a_phone_sized_screen(browser, demo_server,
                                                                         tmp_path, record_property):
    browser.set_window_size(390, 844)
    try:
        open_page(browser, demo_server.url)
        reached = []
        for _ in range(12):  # Tab through the page from its top to the first sample's button
            ActionChains(browser).send_keys(Keys.TAB).perform()
            active = browser.switch_to.active_element
            reached.append(active.get_attribute("id") or active.tag_name)
            if active.tag_name == "button":
                break
        assert reached[:4] == ["file", "camera", "k", "original"] and reached[-1] == "button"
        name = browser.switch_to.active_element.text
        active.send_keys(Keys.ENTER)
        bars = answer(browser)
        sample = next(p for p in (ROOT / "local_test" / "payloads").iterdir()
                      if p.stem == name.replace(" ", "_"))
        expected = server_answer(demo_server, sample.read_bytes(), 5)
        assert [n for n, _ in bars] == [p["label"] for p in expected]
        wide = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"the page is {wide} px wider than a phone's screen"
        font = browser.execute_script("return parseFloat(getComputedStyle("
                                      "document.querySelector('#predictions li')).fontSize)")
        assert font >= 16
        shot = tmp_path / "page-phone.png"
        assert browser.save_screenshot(str(shot))
        record_property("screenshot", str(shot))
        assert console_errors(browser) == []
    finally:
        browser.set_window_size(900, 1030)


def test_through_client_page_a_large_photo_is_downscaled_before_upload(browser, page_server,
                                                                      runtime, tmp_path):
    open_page(browser, page_server)
    assert text(browser, "model") == "Answered by SageMaker endpoint flowers in eu-west-1"
    photo = ROOT / "local_test" / "payloads" / "sunflower.jpg"
    big = tmp_path / "phone.jpg"
    big.write_bytes(phone_photo(photo))
    assert max(opened(big.read_bytes()).size) == 3000
    set_k(browser, 4)
    upload(browser, big)
    bars = answer(browser)
    assert len(bars) == 4 and bars[0][0] == "sunflower"
    sent = runtime.bodies[-1]
    assert max(opened(sent).size) == 1024 and len(sent) < big.stat().st_size / 4
    assert "downscaled from 3000×" in text(browser, "sent")
    before = call(browser)
    browser.find_element(By.ID, "original").click()  # and now the original, as it is
    assert answer(browser, before)[0][0] == "sunflower"
    assert runtime.bodies[-1] == big.read_bytes()
    browser.find_element(By.ID, "original").click()
    assert console_errors(browser) == []


def test_through_client_page_the_containers_error_reaches_the_page(browser, page_server,
                                                                   demo_server, tmp_path):
    open_page(browser, page_server)
    notes = tmp_path / "notes.txt"
    notes.write_text("not a flower\n")
    upload(browser, notes)
    expected = demo_server.post(notes.read_bytes(), "text/plain").json()["error"]
    assert shown_error(browser) == expected
    assert console_errors(browser, FAILED_LOAD) == []
    # and the credentials stayed on this side
    page = requests.get(page_server + "/model-info", timeout=10).text
    assert "testing" not in page and "secret" not in page


def test_client_page_answers_only_its_own_page(page_server, runtime):
    port = page_server.rsplit(":", 1)[1]
    calls = len(runtime.bodies)
    for headers in ({"Origin": "http://evil.example"}, {"Host": f"rebound.example:{port}"},
                    {"Origin": "null"}):
        response = requests.post(page_server + "/invocations", data=b"x", timeout=10,
                                 headers={"Content-Type": "text/plain", **headers})
        assert response.status_code == 403 and "refused" in response.json()["error"], headers
    assert requests.get(page_server + "/", headers={"Host": "rebound.example"},
                        timeout=10).status_code == 403
    assert len(runtime.bodies) == calls  # none of them reached the endpoint
    same = requests.post(page_server + "/invocations", data=b"x", timeout=10,
                         headers={"Content-Type": "text/plain", "Origin": page_server})
    assert same.status_code == 415 and len(runtime.bodies) == calls + 1


def test_the_gallery_is_the_configured_calibration_folder(small_model_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(ROOT / "local_test" / "payloads" / "rose.jpg", folder / "my_rose.jpg")
    (folder / "notes.txt").write_text("not listed")
    with ServerProcess(small_model_dir, {"CALIBRATION_IMAGES_DIR": str(folder)}) as server:
        server.wait_ready()
        assert requests.get(server.url + "/samples", timeout=10).json() == {
            "samples": ["my_rose.jpg"]}
        assert requests.get(server.url + "/samples/notes.txt", timeout=10).status_code == 404
        info = requests.get(server.url + "/model-info", timeout=10).json()
        assert info["arch"] == "resnet18" and info["demo"] is False
