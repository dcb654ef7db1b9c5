"""The video overlay page: overlay colours, strip layout, a self-contained page."""

import numpy as np

from dinoeval.data.video import davis_palette
from dinoeval.pipeline.video_seg import VideoSegConfig, run_video_seg
from dinoeval.report.video import overlay_labels, strip_image, write_video_report


def test_overlay_blends_palette_colour_and_keeps_background():
    frame = np.full((6, 6, 3), 100, np.uint8)
    lab = np.zeros((6, 6), np.uint8)
    lab[1:5, 1:5] = 1
    out = overlay_labels(frame, lab, davis_palette(), alpha=0.5)
    assert (out[0, 0] == 100).all()                    # background untouched
    assert tuple(out[2, 2]) == (114, 50, 50)           # inside: (100 + (128, 0, 0)) / 2
    for r, c in ((1, 2), (4, 2), (2, 1), (2, 4)):       # outline on every side: opaque
        assert tuple(out[r, c]) == (128, 0, 0)


def test_strip_layout_and_page(tmp_path):
    frames = np.zeros((3, 32, 48, 3), np.uint8)
    labels = np.zeros((3, 32, 48), np.uint8)
    img = strip_image(frames, [labels, None, labels], davis_palette())
    # 3 rows (frames + 2 label rows), tiles enlarged 3x to 96 px high, 4 px gaps
    assert img.shape == (3 * (96 + 4), 3 * (144 + 4), 3)
    ds = "moving-shapes@videos=2,frames=4,height=32,width=32,objects=1"
    run = run_video_seg("pixels", ds, config=VideoSegConfig(pixel_patch=4))
    page = write_video_report(tmp_path / "v.html", [("pixels", run), ("again", run)]).read_text()
    assert page.count("<img") == 2 and "shapes001" in page and "J&amp;F" in page
    assert "http" not in page.replace("data:image/png", "")  # self-contained
