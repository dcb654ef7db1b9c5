"""video-seg and dense runners end to end on tiny procedural data (shipped checkpoint + pixels)."""

import numpy as np
import pytest
from PIL import Image

from dinoeval.data.video import get_video_source
from dinoeval.errors import DinoevalError
from dinoeval.models import load_backbone
from dinoeval.pipeline.dense import DenseConfig, run_dense
from dinoeval.pipeline.video_seg import VideoSegConfig, run_video_seg

SHIPPED = "dinoeval/assets/checkpoints/shapes_vit_d128x3_p4_32px.pth"
VIDEOS = "moving-shapes@videos=1,frames=5,height=32,width=48,objects=2"


def test_video_seg_runner_scores_and_writes_davis_pngs(tmp_path):
    ds = get_video_source(VIDEOS)
    run = run_video_seg("pixels", ds,
                        config=VideoSegConfig(pixel_patch=4, masks_dir=str(tmp_path / "masks")))
    rows = run.frame.set_index(["metric", "param"])["value"]
    jf = rows[("J&F-mean", "")]
    assert 0 <= jf <= 1 and rows[("J&F-mean", "video=shapes000")] == pytest.approx(jf)
    assert run.frame["feature"].iloc[0] == "pixels" and run.frame["eval"].iloc[0] == "video-seg"
    pngs = sorted((tmp_path / "masks" / "shapes000").glob("*.png"))
    assert [p.name for p in pngs] == [f"{t:05d}.png" for t in range(5)]
    with Image.open(pngs[0]) as im:
        assert im.mode == "P" and im.size == (48, 32)
        np.testing.assert_array_equal(np.asarray(im), ds.videos[0].load_mask(0))
    frames, gt, pred = run.strips["shapes000"]
    assert frames.shape[1:] == (32, 48, 3) and gt.shape == pred.shape == frames.shape[:3]


def test_video_seg_runner_vit_and_bad_sizes():
    ds = get_video_source(VIDEOS)
    run = run_video_seg(load_backbone(SHIPPED), ds,
                        config=VideoSegConfig(radius=2, n_last_frames=2))
    assert run.result is not None and 0 <= run.result.jf_mean <= 1
    with pytest.raises(DinoevalError, match="not a positive multiple of the patch size 4"):
        run_video_seg(SHIPPED, ds, config=VideoSegConfig(short_side=30, multiple=8))


def test_dense_runner_shapes():
    cfg = DenseConfig(max_iter=20, k=5, pixel_patch=8)
    run = run_dense("pixels", "shapes:train@n=12,size=32", "shapes:test@n=6,size=32", config=cfg)
    got = run.frame.set_index(["eval", "metric"])["value"]
    for ev in ("dense-linear", "dense-knn"):
        assert 0 <= got[(ev, "mIoU")] <= 1 and 0 <= got[(ev, "pixel-acc")] <= 1
    assert ("dense-knn", "IoU[background]") in got.index
    with pytest.raises(DinoevalError, match="classes"):
        run_dense("pixels", "shapes:train@n=4,size=32,classes=3", "shapes:test@n=4,size=32",
                  config=cfg)
