"""The reports in a real headless browser (Debian's chromium): they load, every image decodes,
nothing is fetched from the network, no console errors, and the grid does not overflow."""

from __future__ import annotations

import pytest

from dinoeval.report import write_attention_report, write_results_report
from dinoeval.report._browser import check_page, find_chromium

pytest.importorskip("websocket", reason="needs websocket-client (pip install -e .[dev])")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_chromium() is None,
                       reason="chromium is not installed (apt-get install chromium)"),
]


def _assert_clean(check, tmp_path) -> None:
    (tmp_path / "screenshot.png").write_bytes(check.screenshot or b"")
    bad = [src for w, h, src in check.images if w <= 0 or h <= 0]
    foreign = [u for u in check.requests if not u.startswith(("file://", "data:"))]
    problems = {"load event never fired": not check.loaded,
                "no <img> on the page": not check.images,
                f"{len(bad)} images did not decode": bool(bad),
                f"console errors: {check.console_errors}": bool(check.console_errors),
                f"fetched from outside: {foreign[:5]}": bool(foreign),
                "the page scrolls sideways": check.overflow_x}
    assert not any(problems.values()), "; ".join(k for k, v in problems.items() if v)


def test_attention_report_loads_in_chromium(tmp_path, runs, originals):
    path = write_attention_report(runs, originals, tmp_path / "rep", data="fake:test",
                                  png_figures=False)
    check = check_page(path, width=1280, height=1600)
    _assert_clean(check, tmp_path)
    assert len(check.images) == 1 + 4 * (2 + 3 * 7 * 2)
    assert check.title == "DINO attention maps"
    assert check.screenshot and check.screenshot[:4] == b"\x89PNG"


def test_attention_report_fits_a_narrow_window(tmp_path, runs, originals):
    path = write_attention_report(runs, originals, tmp_path, png_figures=False)
    check = check_page(path, width=720, height=900, screenshot=False)
    assert not check.overflow_x


def test_results_report_loads_in_chromium(tmp_path, results_frame, pretrain_log):
    path = write_results_report(results_frame, tmp_path / "summary.html",
                                pretrain_log=pretrain_log)
    check = check_page(path)
    _assert_clean(check, tmp_path)
    assert check.title == "dinoeval results"


def test_the_browser_check_catches_broken_pages(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><head><title>b</title></head><body>"
                    "<img src=\"missing.png\"><script>console.error('boom')</script>"
                    "<div style=\"width:5000px\">wide</div></body></html>")
    check = check_page(page, screenshot=False)
    assert check.images and check.images[0][0] == 0
    assert any("boom" in e for e in check.console_errors)
    assert check.overflow_x
