"""End-to-end in headless Chromium: the verdict badge and the aggregate contour change when the
threshold moves, Calibrate fills the threshold, and the review queue takes a keyboard decision that
lands in the database. Screenshots in tests/_artifacts/ (decisions-*.png)."""
from __future__ import annotations

import time

import pytest
from test_e2e_browser import ARTIFACTS, Shots, browser, studio, wait_count, wait_text  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.e2e]


def _verdict(page) -> str:
    return page.get_attribute("#verdict .verdict-badge", "data-verdict") or ""


def _map_src(page) -> str:
    return page.get_attribute("#aggregate-map img", "src") or ""


def _set_threshold(page, value: float) -> None:
    page.locator("#threshold input[type=range]").fill(f"{value:.3f}")


def test_verdict_and_contour_follow_the_threshold(studio, browser):  # noqa: F811
    url, ctx = studio
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.set_default_timeout(90_000)
    shot = Shots(page)
    try:
        page.goto(url)
        page.wait_for_selector("#sample-project")
        page.click("#sample-project")
        wait_text(page, "#project-status", "sample-")
        page.click("#inspect-tab-button")
        page.click("#query-pick input")
        page.locator("#query-pick [data-testid=dropdown-option]", has_text="scratch").first.click()
        wait_count(page, "#query-upload img", 1)
        page.click("#score-button")
        wait_text(page, "#inspect-status", "Scored")
        score = float(page.input_value("#aggregate-score textarea, #aggregate-score input"))

        _set_threshold(page, max(0.001, score - 0.05))
        page.wait_for_function("() => document.querySelector('#verdict .verdict-badge')?.dataset.verdict === 'NG'")
        src_low = _map_src(page)
        shot("decisions-ng")
        _set_threshold(page, min(0.999, score + 0.05))
        page.wait_for_function("() => document.querySelector('#verdict .verdict-badge')?.dataset.verdict === 'OK'")
        page.wait_for_function("(old) => { const i = document.querySelector('#aggregate-map img');"
                               " return i && i.src && i.src !== old; }", arg=src_low)
        assert _verdict(page) == "OK" and _map_src(page) != src_low  # the contour was redrawn at the new value
        shot("decisions-ok")

        # Calibrate (nothing labelled yet: the shots-only heuristic) moves the threshold and says how
        page.click("#calibrate")
        wait_text(page, "#calibration-text", "heuristic", timeout=120_000)
        pid = int(ctx.store.find_project(page.input_value("#project-name textarea, #project-name input"))["id"])
        rec = ctx.store.get_threshold(pid, None, any_weights=True)
        assert rec is not None and rec["mode"] == "heuristic"
        assert _verdict(page) in ("OK", "NG", "uncertain")

        # the review queue: load, decide with the keyboard, the label is in the database
        page.click("#review-tab-button")
        page.fill("#reviewer textarea, #reviewer input", "e2e reviewer")
        page.click("#review-load")
        wait_count(page, "#review-queue img", 6)
        wait_text(page, "#review-info", "tool says")
        page.locator("#review-status").click()  # focus off the text box: keys go to the queue
        page.keyboard.press("n")
        wait_text(page, "#review-status", "Saved NG")
        labelled = ctx.store.labelled_images(pid, "NG")
        assert labelled and any(r["reviewer"] == "e2e reviewer" for r in labelled)
        time.sleep(0.5)
        shot("decisions-review")
    except Exception:
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "failure-decisions.png"), full_page=True)
        raise
    finally:
        page.close()
