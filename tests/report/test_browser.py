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


def test_the_browser_leaves_no_process_or_profile_behind(tmp_path, monkeypatch):
    # Chromium's helper processes kept writing to the profile after the browser exited, and
    # removing the profile failed with "Directory not empty" (seen once in CI).
    import os

    import dinoeval.report._browser as browser

    profiles, procs = [], []
    real_mkdtemp, real_popen = browser.tempfile.mkdtemp, browser.subprocess.Popen

    def mkdtemp(*a, **kw):
        profiles.append(real_mkdtemp(*a, **kw))
        return profiles[-1]

    def popen(*a, **kw):
        procs.append(real_popen(*a, **kw))
        return procs[-1]

    monkeypatch.setattr(browser.tempfile, "mkdtemp", mkdtemp)
    monkeypatch.setattr(browser.subprocess, "Popen", popen)
    page = tmp_path / "p.html"
    page.write_text("<!DOCTYPE html><html><body><p>hi</p></body></html>")
    for _ in range(2):
        assert check_page(page, screenshot=False).loaded
    assert len(profiles) == len(procs) == 2
    for profile, proc in zip(profiles, procs, strict=True):
        assert not os.path.exists(profile), f"profile {profile} was left behind"
        assert proc.returncode is not None
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # nothing is left in chromium's process group
