"""Video sources: the procedural moving shapes and the DAVIS folder layout."""

import numpy as np
import pytest
from PIL import Image

from dinoeval.data.video import (
    MovingShapesConfig,
    davis_palette,
    get_video_source,
    read_label_png,
    render_moving_shapes,
    write_palette_png,
)
from dinoeval.errors import DinoevalError


def test_moving_shapes_deterministic_exact_masks():
    cfg = MovingShapesConfig(videos=2, frames=5, height=32, width=48, objects=3, seed=1)
    f1, m1 = render_moving_shapes(cfg, 1)
    f2, m2 = render_moving_shapes(MovingShapesConfig(videos=5, frames=5, height=32, width=48,
                                                     objects=3, seed=1), 1)
    np.testing.assert_array_equal(f1, f2)  # video i does not depend on the number of videos
    np.testing.assert_array_equal(m1, m2)
    assert f1.shape == (5, 32, 48, 3) and m1.shape == (5, 32, 48) and m1.dtype == np.uint8
    assert set(np.unique(m1)) <= {0, 1, 2, 3}
    other, _ = render_moving_shapes(cfg, 0)
    assert not np.array_equal(other, f1)
    assert not np.array_equal(m1[0], m1[-1])  # objects move


def test_moving_shapes_masks_cover_what_the_objects_change():
    cfg = MovingShapesConfig(videos=1, frames=3, height=48, width=64, objects=2, seed=3)
    frames, labels = render_moving_shapes(cfg, 0)
    # background pixels far from objects are smooth: neighbouring pixels differ little, while
    # every object has an inside (label > 0) whose mean colour differs from the background's
    for t in range(3):
        for k in np.unique(labels[t])[1:]:
            inside = frames[t][labels[t] == k].mean(0)
            outside = frames[t][labels[t] == 0].mean(0)
            assert np.abs(inside - outside).max() > 5


def test_moving_shapes_spec_and_errors():
    ds = get_video_source("moving-shapes@videos=2,frames=4,height=32,width=32")
    assert len(ds.videos) == 2 and len(ds.videos[0]) == 4 and ds.native_size
    assert ds.videos[0].load_frame(3).shape == (32, 32, 3)
    assert ds.videos[0].num_objects >= 1
    with pytest.raises(DinoevalError, match="frames must be between 3"):
        get_video_source("moving-shapes@frames=2")
    with pytest.raises(DinoevalError, match="bad option"):
        get_video_source("moving-shapes@speed=2")
    with pytest.raises(DinoevalError, match="unknown video source"):
        get_video_source("kinetics:/x")


def _make_davis(root, videos=("bear", "car"), frames=4, size=(24, 40), annotate_all=True):
    rng = np.random.default_rng(0)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(videos) + "\n")
    for v in videos:
        img_dir = root / "JPEGImages" / "480p" / v
        ann_dir = root / "Annotations" / "480p" / v
        img_dir.mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
                img_dir / f"{t:05d}.jpg")
            if t == 0 or annotate_all:
                lab = np.zeros(size, np.uint8)
                lab[2 + t:10 + t, 3:12] = 1
                lab[12:20, 20:30] = 2
                write_palette_png(ann_dir / f"{t:05d}.png", lab, davis_palette())
    return root


def test_davis_layout_reader(tmp_path):
    ds = get_video_source(f"davis:{_make_davis(tmp_path / 'DAVIS')}")
    assert [v.name for v in ds.videos] == ["bear", "car"] and not ds.native_size
    v = ds.videos[0]
    assert len(v) == 4 and v.frame_names[0] == "00000" and v.num_objects == 2
    assert v.load_frame(2).shape == (24, 40, 3)
    mask = v.load_mask(1)
    assert mask.dtype == np.uint8 and mask[3, 3] == 1 and mask[15, 25] == 2 and mask[0, 0] == 0
    np.testing.assert_array_equal(v.palette[1], davis_palette()[1])


def test_davis_errors_before_work(tmp_path):
    with pytest.raises(DinoevalError, match="no video list"):
        get_video_source(f"davis:{tmp_path}")
    root = _make_davis(tmp_path / "D", annotate_all=False)
    ds = get_video_source(f"davis:{root}")
    assert ds.videos[0].load_mask(2) is None  # only the first frame is needed
    (root / "Annotations" / "480p" / "car" / "00000.png").unlink()
    with pytest.raises(DinoevalError, match="car has no first-frame annotation"):
        get_video_source(f"davis:{root}")
    with pytest.raises(DinoevalError, match="needs a folder"):
        get_video_source("davis")


def test_palette_png_round_trip(tmp_path):
    lab = np.array([[0, 1, 2], [3, 255, 1]], np.uint8)
    p = write_palette_png(tmp_path / "v" / "00001.png", lab, davis_palette())
    with Image.open(p) as im:
        assert im.mode == "P"
        assert tuple(im.getpalette()[3:6]) == (128, 0, 0)  # DAVIS object 1: dark red
    np.testing.assert_array_equal(read_label_png(p), lab)
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DinoevalError, match="palette or greyscale"):
        read_label_png(tmp_path / "rgb.png")
