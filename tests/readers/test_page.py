"""The reader page in a real headless browser (Debian's chromium with chromium-driver, through selenium),
used as a reader would: opened from disk, answered by keyboard and mouse, reloaded mid-way, exported; the
exported file is then scored and its numbers checked against the answers given.

Skipped, saying why, where selenium, chromium or chromedriver is missing (``.ci/run`` installs them)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxrsyn.readers.order import reader_order
from cxrsyn.readers.score import score

READER = "dr_alice"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # without these, chromium waits on the network that a closed machine does not have
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1200,800",
)


def browser_binaries() -> tuple[str | None, str | None]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    return chromium, shutil.which("chromedriver")


def why_no_browser() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -e '.[dev]')"
    if not all(browser_binaries()):
        return "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    return None


pytestmark = [
    pytest.mark.slow,  # a browser, and the study made by a subprocess
    pytest.mark.skipif(why_no_browser() is not None, reason=str(why_no_browser())),
]


def start_browser(download_dir: Path, profile_dir: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = browser_binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {
            "download.default_directory": str(download_dir),
            "download.prompt_for_download": False,
            "safebrowsing.enabled": False,
        },
    )
    browser = webdriver.Chrome(service=Service(driver), options=options)
    browser.set_page_load_timeout(20)
    return browser


def intended_answers(case_id: str) -> dict:
    """What our reader answers to a case: a fixed function of its id (so the test knows every answer)."""
    digest = hashlib.sha256(case_id.encode()).digest()
    return {
        "origin": "synthetic" if digest[0] % 2 else "real",
        "origin_confidence": 1 + digest[1] % 5,
        "pneumonia": "yes" if digest[2] % 2 else "no",
        "pneumonia_confidence": 1 + digest[3] % 5,
    }


def current_case(browser) -> str:
    return Path(browser.find_element("id", "image").get_attribute("src")).stem


def answer_by_keyboard(browser, answers: dict) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    keys = [
        "s" if answers["origin"] == "synthetic" else "r",
        str(answers["origin_confidence"]),
        "y" if answers["pneumonia"] == "yes" else "n",
        "67890"[answers["pneumonia_confidence"] - 1],
        Keys.ENTER,
    ]
    ActionChains(browser).send_keys(*keys).perform()


def answer_by_mouse(browser, answers: dict) -> None:
    for field in ("origin", "origin_confidence", "pneumonia", "pneumonia_confidence"):
        browser.find_element(
            "css selector", f'button[data-field="{field}"][data-value="{answers[field]}"]'
        ).click()
    browser.find_element("id", "next").click()


def wait_for(condition, timeout: float = 10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the browser")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    downloads = tmp_path_factory.mktemp("downloads")
    driver = start_browser(downloads, tmp_path_factory.mktemp("profile"))
    driver.downloads = downloads
    yield driver
    driver.quit()


def test_a_reader_answers_every_case_resumes_after_reload_exports_and_is_scored(
    browser, reader_study, tmp_path
):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    key = pd.read_csv(reader_study / "key" / "key.csv")
    n_cases = len(key)
    browser.get((reader_study / "reader" / "index.html").as_uri())
    assert browser.find_element("id", "reading").get_attribute("hidden") is not None  # asks who reads first
    browser.find_element("id", "reader-input").send_keys(READER, Keys.ENTER)
    wait_for(lambda: browser.find_element("id", "image").get_attribute("naturalWidth") not in (None, "0"))

    seen, given = [], {}
    for number in range(n_cases):
        if number == n_cases // 2:  # reload mid-way: the page resumes where the reader stopped
            browser.refresh()
            wait_for(lambda: browser.find_element("id", "progress").text.startswith("Case"))
            assert browser.find_element("id", "progress").text == (
                f"Case {number + 1} of {n_cases} ({number} answered)"
            )
        case = current_case(browser)
        seen.append(case)
        given[case] = intended_answers(case)
        if number == 1:  # window/level by dragging on the image
            before = browser.find_element("id", "image").value_of_css_property("filter")
            viewer = browser.find_element("id", "viewer")
            ActionChains(browser).move_to_element(viewer).click_and_hold().move_by_offset(
                80, -40
            ).release().perform()
            after = browser.find_element("id", "image").value_of_css_property("filter")
            assert before != after and "contrast" in after
            ActionChains(browser).send_keys("w").perform()
            assert browser.find_element("id", "image").value_of_css_property("filter") == before
        if number == 2:  # a comment, typed after pressing C, left with Esc
            ActionChains(browser).send_keys("c").perform()
            ActionChains(browser).send_keys("faint band at the bottom", Keys.ESCAPE).perform()
        if number % 3 == 0:
            answer_by_mouse(browser, given[case])
        else:
            answer_by_keyboard(browser, given[case])
    assert browser.find_element("id", "done").is_displayed()
    assert browser.find_element("id", "progress").text.endswith(f"({n_cases} answered)")

    browser.find_element("id", "export").click()
    exported = wait_for(lambda: list(browser.downloads.glob("answers-*.json")))
    document = json.loads(exported[0].read_text())
    study = json.loads((reader_study / "study.json").read_text())
    # the browser's order for this reader equals Python's (cxrsyn/readers/order.py), and is what was shown
    assert document["order"] == reader_order(sorted(key["id"]), study["seed"], READER) == seen
    assert document["reader"] == READER and document["complete"] and document["study"] == study["study"]
    for answer in document["answers"]:
        assert {k: answer[k] for k in given[answer["case"]]} == given[answer["case"]]
    assert document["answers"][2]["comment"] == "faint band at the bottom"

    results = score(reader_study, exported, tmp_path / "results", n_resamples=100, figures=False)
    assert results["problems"] == [] and results["complete_readers"] == [READER]
    key = key.set_index("id")
    ids = sorted(given)
    synthetic = np.array([key.loc[c, "source"] == "synthetic" for c in ids])
    said = np.array([given[c]["origin"] == "synthetic" for c in ids])
    ten_point = np.array(
        [
            5 + given[c]["origin_confidence"] if said[i] else 6 - given[c]["origin_confidence"]
            for i, c in enumerate(ids)
        ]
    )
    entry = results["readers"][0]
    assert entry["accuracy"] == pytest.approx((said == synthetic).mean())
    assert entry["origin_auroc"]["auroc"] == pytest.approx(roc_auc_score(synthetic, ten_point))
