"""The report pages in a real browser (headless Chromium, `.ci/run` installs it): no console
error, every image loads, the students table sorts, and nothing is fetched from the network.

The laptop tier opens the pages of a synthetic class; the slow tier those of a real graded
batch (tests/test_grade_samples.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chromium import IMAGES, Chromium, check_page, launch
from synthetic_class import synthetic_class, write_outputs


@pytest.fixture(scope="module")
def browser():
    with launch() as chromium:
        yield chromium


TOTALS = "Array.from(document.querySelectorAll('table.sortable')[0].tBodies[0].rows).map(r => r.cells[{}].dataset.v)"


def test_the_browser_check_sees_errors_and_broken_images(browser: Chromium, tmp_path: Path):
    page = tmp_path / "broken.html"
    page.write_text("<!doctype html><img src='missing.png'><script>console.error('boom')</script>")
    browser.open(page)
    errors = browser.errors()
    assert any("boom" in e for e in errors) and any("ERR_FILE_NOT_FOUND" in e for e in errors), errors
    assert browser.evaluate(IMAGES) == [["missing.png", False]]


def test_class_page_loads_and_its_table_sorts(browser: Chromium, tmp_path: Path):
    write_outputs(synthetic_class(), tmp_path)
    images = check_page(browser, tmp_path / "index.html")
    assert "score_distribution.png" in {src for src, _ in images} and len(images) == 5  # plot + 4 students' images
    headers = browser.evaluate(
        "Array.from(document.querySelectorAll('table.sortable')[0].tHead.rows[0].cells).map(c => c.textContent)"
    )
    total = headers.index("total")
    browser.click(f"table.sortable th:nth-child({total + 1})")
    ascending = [float(v) for v in browser.evaluate(TOTALS.format(total))]
    assert ascending == sorted(ascending) and ascending != sorted(ascending, reverse=True)
    browser.click(f"table.sortable th:nth-child({total + 1})")
    assert [float(v) for v in browser.evaluate(TOTALS.format(total))] == sorted(ascending, reverse=True)
    browser.click("table.sortable th:nth-child(1)")
    assert browser.evaluate(TOTALS.format(0)) == ["alice", "bob", "carol", "dave", "eve"]
    assert browser.errors() == []


def test_student_page_loads_with_its_image(browser: Chromium, tmp_path: Path):
    write_outputs(synthetic_class(), tmp_path)
    page = tmp_path / "submissions" / "alice" / "report.html"
    check_page(browser, page)
    text = browser.evaluate("document.body.innerText")
    assert "cfg_swapped" in text and "denoise_time" in text
    back = browser.evaluate("document.querySelector('a').href")
    assert back == (tmp_path / "index.html").resolve().as_uri()
