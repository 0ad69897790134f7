"""The /docs page in a real browser: Debian's headless Chromium against a real Gunicorn server.

Draws a "1" on the draw-a-digit pad with pointer events, presses "Predict drawing" and
reads the answer the page shows; also sends the prefilled JSON example of every model.
The page must work offline: its Content-Security-Policy allows nothing outside the server.
Skips with the reason when Chromium, its driver or selenium is missing (.ci/run installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from dlqr.card import names
from tests.conftest import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "DLQR_BIND": f"127.0.0.1:{port}", "DLQR_WORKERS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "serving/gunicorn.conf.py", "serving.wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.1)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("server not ready in 60 s")
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip(
            "Chromium or chromedriver not installed (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="dlqr-chromium-")
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1280,2000",
    ):  # fmt: skip
        opts.add_argument(flag)
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=DRIVER))
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _wait_text(drv, element_id: str, needle: str, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = drv.find_element("id", element_id).text
        if needle in text:
            return text
        time.sleep(0.1)
    raise AssertionError(f"#{element_id} never showed {needle!r}; last text: {text!r}")


def _open(drv, element_id: str) -> None:
    """Open the <details> that holds an element (the 'Try it' sections start closed)."""
    drv.execute_script(
        "var e = document.getElementById(arguments[0]); while (e) { if (e.tagName === 'DETAILS') e.open = true;"
        " e = e.parentElement; }",
        element_id,
    )


def test_draw_a_digit_pad_predicts_the_drawing(server, browser):
    browser.get(server + "/docs")
    _open(browser, "pad")
    pad = browser.find_element("id", "pad")
    # A vertical stroke down the middle of the 224x224 pad: an MNIST-style "1".
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(browser).move_to_element_with_offset(pad, 0, -70).click_and_hold().move_by_offset(
        0, 35
    ).move_by_offset(0, 35).move_by_offset(0, 35).move_by_offset(0, 35).release().perform()
    browser.find_element("id", "pad-send").click()
    text = _wait_text(browser, "out-digit", "HTTP 200")
    body = json.loads(text.split("\n", 1)[1])
    assert body["model"] == "digit"
    assert body["predictions"][0]["digit"] == 1, body
    # Offline by construction: the page may reach nothing but this server.
    assert browser.execute_script("return performance.getEntriesByType('resource').every("
                                  "function (e) { return e.name.indexOf(location.origin) === 0; })")  # fmt: skip


@pytest.mark.parametrize("model", names())
def test_prefilled_example_of_every_model_answers_200(server, browser, model):
    browser.get(server + "/docs")
    _open(browser, f"body-{model}")
    browser.find_element("css selector", f'button.send[data-model="{model}"]').click()
    text = _wait_text(browser, f"out-{model}", "HTTP ")
    assert text.startswith("HTTP 200"), text
    answer = json.loads(text.split("\n", 1)[1])
    assert answer["model"] == model
    if model == "digit":  # the example is MNIST test image 0, a real 7, not a blank image
        assert answer["predictions"][0]["digit"] == 7, answer


def test_request_fields_are_shown_with_types_and_bounds(server, browser):
    browser.get(server + "/docs")
    _open(browser, "predict_wine")
    browser.execute_script(
        "document.querySelectorAll('details.fields').forEach(function (d) { d.open = true; })"
    )
    text = browser.find_element("id", "predict_wine").text
    assert "instances[].ph number minimum 0, maximum 14" in text, text[:2000]
    assert "$ref" not in text.split("Request fields", 1)[1].split("Responses", 1)[0]
