"""The playground in a real browser: Debian's Chromium driven by Playwright's Python package.

Signs in, translates a sentence, marks an error and submits one rating, then checks the database.
Screenshots go to the test's temporary folder; with ``ADAPTMLLM_SCREENSHOTS=1`` also to
``assets/playground.png`` and ``assets/human-eval.png`` (for the README), so that ordinary test
runs do not rewrite tracked files.

Skips, with the reason, where Chromium or Playwright is not installed (``.ci/run`` installs both:
``apt-get install chromium`` and ``pip install playwright``; never ``playwright install``).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from adaptmllm.config import ServeConfig
from conftest import REPO, free_port

CHROMIUM = os.environ.get("ADAPTMLLM_CHROMIUM", "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
USER, PASSWORD = "translator", "browser-test-pw-7Q"

pytest.importorskip("gradio")
if not Path(CHROMIUM).is_file():
    pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    pytest.skip("Playwright's Python package is not installed (pip install playwright)", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tiny_run, tmp_path_factory):
    from adaptmllm.apps.playground.app import serve

    db = tmp_path_factory.mktemp("browser") / "human_eval.sqlite"
    srv = serve(tiny_run.model_dir, tiny_run.model_dir, run_dir=tiny_run.run_dir, db=db,
                config=ServeConfig(port=free_port(), eval_segments=5), auth=(USER, PASSWORD), show_results=True,
                quiet=True)
    srv.db = db
    yield srv
    srv.close()


def _save(page, tmp_path: Path, name: str) -> Path:
    out = tmp_path / name
    page.screenshot(path=str(out), full_page=True)
    if os.environ.get("ADAPTMLLM_SCREENSHOTS") == "1":
        (REPO / "assets").mkdir(exist_ok=True)
        shutil.copyfile(out, REPO / "assets" / name)
    return out


def test_translate_and_rate_in_chromium(server, tmp_path):
    with sync_playwright() as p:
        # a fresh --user-data-dir: Playwright takes it as launch_persistent_context's first argument
        browser = p.chromium.launch_persistent_context(str(tmp_path / "profile"), executable_path=CHROMIUM,
                                                       headless=True, args=FLAGS,
                                                       viewport={"width": 1280, "height": 900})
        try:
            page = browser.pages[0] if browser.pages else browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(server.local_url)
            # Gradio's login page
            page.get_by_label("username").fill(USER)
            page.get_by_label("password").fill(PASSWORD)
            page.get_by_role("button", name="Login").click()
            page.get_by_role("button", name="Translate", exact=True).wait_for()

            page.locator("#am-text textarea").fill("The nurse treats the patient.")
            page.get_by_role("button", name="Translate", exact=True).click()
            out = page.locator("#am-fine textarea")
            page.wait_for_function("el => el.value.length > 0", arg=out.element_handle())
            translation = out.input_value()
            assert translation and page.locator("#am-base textarea").input_value() == translation
            shot1 = _save(page, tmp_path, "playground.png")

            page.get_by_role("tab", name="Human evaluation").click()
            name_box = page.locator("#am-name textarea, #am-name input").first
            assert name_box.input_value() == USER and not name_box.is_editable()  # the login is the annotator
            page.get_by_role("button", name="Start / continue").click()
            target = page.locator("#am-target textarea")
            page.wait_for_function("el => el.value.length > 0", arg=target.element_handle())
            assert "Segment 1 of 10" in page.locator(".am-progress").first.inner_text()
            # select the first word of the translation with the mouse (a double click), as an annotator does
            assert target.evaluate("el => el.readOnly")  # selectable, not editable
            target.dblclick(position={"x": 12, "y": 16})
            marked = page.locator("#am-span textarea, #am-span input").first
            page.wait_for_function("el => el.value.length > 0", arg=marked.element_handle())
            page.get_by_label("major", exact=True).check()
            page.get_by_role("button", name="Add error").click()
            page.get_by_text("1: accuracy/major").first.wait_for()
            page.get_by_label("4: most meaning preserved", exact=False).check()
            shot2 = _save(page, tmp_path, "human-eval.png")
            page.get_by_role("button", name="Submit score and go to the next segment").click()
            page.get_by_text("Segment 2 of 10").wait_for()
        finally:
            browser.close()
    assert shot1.stat().st_size > 10_000 and shot2.stat().st_size > 10_000
    with sqlite3.connect(server.db) as con:
        ratings = con.execute("SELECT annotator, sqm FROM ratings").fetchall()
        errors = con.execute("SELECT category, severity, span_start FROM errors").fetchall()
    assert ratings == [(USER, 4)]
    assert errors == [("accuracy", "major", 0)]  # the double-clicked first word
