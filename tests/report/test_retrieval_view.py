"""The retrieval view: top hits per backbone, marked, self-contained; checked in chromium."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.data._base import ArraySource
from dinoeval.features import FeatureSet
from dinoeval.pipeline.retrieval import RetrievalConfig, RetrievalRun, evaluate_retrieval
from dinoeval.report._browser import check_page, find_chromium
from dinoeval.report.retrieval import write_retrieval_report


def _runs():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (12, 20, 28, 3), dtype=np.uint8)
    labels = np.arange(12) % 3
    src = ArraySource(imgs, labels, spec="toy", name="toy", split="all", classes=("a", "b", "c"))
    runs = []
    for name, x in (("good", np.eye(3)[labels] + rng.normal(size=(12, 3)) * 0.01),
                    ("noise", rng.normal(size=(12, 3)))):
        fs = FeatureSet(features=x.astype(np.float32), labels=labels, indices=np.arange(12))
        results, top = evaluate_retrieval(fs, fs, RetrievalConfig(show=3), same_set=True)
        runs.append(RetrievalRun(frame=None, results=results, top=top, query_source=src,
                                 gallery_source=src, backbone=name))
    return runs


def test_view_marks_relevant_irrelevant_and_junk(tmp_path):
    runs = _runs()
    page = write_retrieval_report(runs, tmp_path / "v.html", title="toy")
    text = page.read_text()
    assert text.count("<img") == 3 * (1 + 2 * 5)
    assert "http" not in text.replace("http-equiv", "")  # nothing fetched
    # the good backbone: the query itself (junk) then its 3 same-class images (relevant)
    assert text.count('class="junk"') == 3 * 2 and 'class="rel"' in text
    assert "good: mAP 1.000" in text


pytestmark_browser = pytest.mark.skipif(find_chromium() is None,
                                        reason="chromium is not installed")


@pytest.mark.slow
@pytestmark_browser
def test_view_loads_in_chromium(tmp_path):
    pytest.importorskip("websocket", reason="needs websocket-client (pip install -e .[dev])")
    page = write_retrieval_report(_runs(), tmp_path / "v.html")
    check = check_page(page, width=1280, height=1200)
    (tmp_path / "shot.png").write_bytes(check.screenshot or b"")
    assert check.loaded and check.title == "Retrieval"
    assert len(check.images) == 3 * 11 and all(w > 0 and h > 0 for w, h, _ in check.images)
    assert not check.console_errors and not check.overflow_x
    assert all(u.startswith(("file://", "data:")) for u in check.requests)
    narrow = check_page(page, width=700, height=900, screenshot=False)
    assert not narrow.overflow_x
