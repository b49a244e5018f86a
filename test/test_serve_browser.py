"""The studio's browser app in a real headless Chromium (Debian's chromium + chromedriver, no downloads)."""
from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from helpers.serve import add_previews_and_evaluation, make_dataset, running, train_model
from helpers.waiting import wait_for
from waveforms.config import ServeConfig, generation

pytestmark = pytest.mark.slow
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.fail("chromium and chromium-driver are not installed (make setup installs them)")
    root = tmp_path_factory.mktemp("studio-ui")
    train_model(make_dataset(root / "dataset"), root / "runs" / "tiny")
    add_previews_and_evaluation(root / "runs" / "tiny")
    cfg = ServeConfig(roots=[str(root)], upload_dir=str(tmp_path_factory.mktemp("ui-uploads")))
    with running(cfg) as url:
        yield url, root


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must not look for a browser or driver online
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1280,1100",
                 "--autoplay-policy=no-user-gesture-required",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def open_page(browser, url: str, page: str) -> None:
    browser.get(f"{url}/#{page}")
    wait_for(lambda: browser.execute_script("return document.body.dataset.ready === '1'"), 30, "the app", every=0.1)


def shot(browser, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"studio-{name}.png"
    browser.save_screenshot(str(path))
    if os.environ.get("STUDIO_SCREENSHOTS"):  # refresh the docs' pictures (docs/studio-*.png)
        shutil.copy(path, Path(os.environ["STUDIO_SCREENSHOTS"]) / path.name)
    return path


def test_datasets_page_lists_licences_and_plays_a_track(studio, browser, tmp_path):
    url, _ = studio
    open_page(browser, url, "datasets")
    rows = browser.find_elements("css selector", "#ds-tracks tbody tr")
    cells = [[td.text for td in r.find_elements("tag name", "td")][:7] for r in rows]
    assert cells[1] == ["t1", "Second Sine", "Bea", "Electronic", "CC-BY-SA 4.0", "2.0", "train"]
    assert "broken.mp3: decode-failed" in browser.find_element("id", "ds-errors").text
    rows[1].find_element("css selector", "button.play").click()
    wait_for(lambda: browser.execute_script("return window.studio.spectrogramColumns > 100"), 30, "a spectrogram",
             every=0.1)
    t = wait_for(lambda: browser.execute_script("const a = document.getElementById('ds-audio');"
                                                "return a.currentTime > 0.2 && a.currentTime"),
                 30, "playback", every=0.1)
    assert t > 0.2
    assert shot(browser, tmp_path, "datasets").stat().st_size > 10_000


def test_models_page_charts_the_metrics_and_updates_live(studio, browser, tmp_path):
    import json

    url, root = studio
    open_page(browser, url, "models")
    rows = [json.loads(line) for line in (root / "runs/tiny/metrics.jsonl").read_text().splitlines()]
    steps = wait_for(lambda: browser.execute_script("return window.studio.charts.a && window.studio.charts.a.data[0]"),
                     30, "the loss chart", every=0.1)
    assert steps == [r["step"] for r in rows]
    assert "Second Sine" in browser.find_element("css selector", "#card-a table.memorisation").text
    # the two validation numbers under their own labels: training's probe batches, the evaluation's whole split
    best = min(r["val_loss"] for r in rows if "val_loss" in r)
    probe = browser.find_element("css selector", "#card-a td.val-probe-bits")
    assert probe.text == f"{best / math.log(2):.3f}"
    assert probe.find_element("xpath", "preceding-sibling::td").text == "val bits/sample (probe batches)"
    split = browser.find_element("css selector", "#card-a table.evaluation td.val-split-bits")
    assert split.text == f"{2.5 / math.log(2):.3f}"
    assert split.find_element("xpath", "preceding-sibling::td").text == "val split bits/sample"
    with open(root / "runs/tiny/metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": 40, "loss": 1.5, "val_loss": 1.75, "wall_time": 9.0}) + "\n")
    last = wait_for(lambda: browser.execute_script("const d = window.studio.charts.a.data;"
                                                   "return d[0].at(-1) === 40 && [d[1].at(-1), d[2].at(-1)]"),
                    30, "the streamed row", every=0.1)
    assert last == [1.5, 1.75]
    assert shot(browser, tmp_path, "models").stat().st_size > 10_000


def test_generate_page_plays_while_generating_and_shows_upload_errors(studio, browser, tmp_path):
    url, _ = studio
    open_page(browser, url, "generate")
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not audio\n" * 50)
    browser.find_element("id", "g-prime-file").send_keys(str(bad))
    status = wait_for(lambda: "refused" in (t := browser.find_element("id", "g-prime-status").text) and t,
                      30, "the upload error", every=0.1)
    assert "not an audio file" in status
    browser.execute_script("document.getElementById('g-prime-file').value = ''")
    browser.find_element("id", "g-seconds").clear()
    browser.find_element("id", "g-seconds").send_keys("3")
    assert float(browser.find_element("id", "g-top-p").get_attribute("value")) == generation.TOP_P
    browser.find_element("id", "g-start").click()
    first = wait_for(lambda: browser.execute_script("return document.getElementById('g-audio').currentTime"),
                     30, "playback to start", every=0.1)
    later = wait_for(lambda: (t := browser.execute_script("return document.getElementById('g-audio').currentTime"))
                     > first + 0.5 and t, 30, "playback to advance", every=0.1)
    assert later > first
    wait_for(lambda: browser.find_element("id", "g-status").text == "done", 30, "the end", every=0.1)
    href = browser.find_element("id", "g-download-wav").get_attribute("href")
    assert "download=1" in href and f"top_p={generation.TOP_P:g}" in href
    assert shot(browser, tmp_path, "generate").stat().st_size > 10_000
