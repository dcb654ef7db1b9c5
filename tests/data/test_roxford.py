"""The revisited Oxford/Paris layout reader and its restricted unpickler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

from dinoeval.data import get_source
from dinoeval.data.roxford import (
    RevisitedSource,
    UnsafeGroundTruthError,
    crop_box,
    read_groundtruth,
    safe_load_pickle,
)
from dinoeval.errors import DinoevalError


def make_revisited(root, name="roxford5k", n_db=8, seed=0):
    """A tiny revisited-layout benchmark: 2 queries, ``n_db`` database images (40x30 jpg)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    (folder / "jpg").mkdir(parents=True)
    imlist = [f"db_{i:02d}" for i in range(n_db)]
    qimlist = ["q_a", "q_b"]
    for n in imlist + qimlist:
        arr = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / "jpg" / f"{n}.jpg", quality=95)
    gnd = [
        {"easy": np.array([0, 1]), "hard": np.array([2]), "junk": np.array([3]),
         "bbx": np.array([5.0, 4.0, 25.2, 20.0])},
        {"easy": [4], "hard": [], "junk": [5, 6], "bbx": [0.0, 0.0, 40.0, 30.0]},
    ]
    with open(folder / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd}, f)
    return folder


def test_reads_the_layout_and_crops_queries_to_their_box(tmp_path):
    folder = make_revisited(tmp_path)
    gt = read_groundtruth(tmp_path, "roxford5k")  # the parent folder works too
    assert gt.folder == folder and len(gt.imlist) == 8 and gt.qimlist == ("q_a", "q_b")
    np.testing.assert_array_equal(gt.easy[0], [0, 1])
    assert gt.hard[1].size == 0 and gt.junk[1].tolist() == [5, 6]
    q = get_source(f"roxford5k:query@{folder}")
    full = get_source(f"roxford5k:query-full@{folder}")
    db = get_source(f"roxford5k:database@{folder}")
    assert isinstance(q, RevisitedSource) and len(q) == 2 and len(db) == 8
    assert (q.labels == -1).all()
    # box [5, 4, 25.2, 20] -> columns 5..25, rows 4..20, as PIL's Image.crop
    img = full.load(0)
    ref = np.asarray(Image.open(folder / "jpg" / "q_a.jpg").convert("RGB").crop((5, 4, 25, 20)))
    np.testing.assert_array_equal(q.load(0), ref)
    assert q.load(0).shape == (16, 20, 3) and img.shape == (30, 40, 3)
    assert q.fingerprint() != full.fingerprint()


def test_malicious_groundtruth_is_refused_without_running_code(tmp_path):
    folder = make_revisited(tmp_path)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump({"imlist": ["db_00"], "qimlist": [], "gnd": [], "x": Evil()}, f)
    with pytest.raises(UnsafeGroundTruthError, match=r"refusing to load .*mkdir"):
        read_groundtruth(folder, "roxford5k")
    assert not marker.exists()
    with pytest.raises(UnsafeGroundTruthError):
        get_source(f"roxford5k:database@{folder}")
    assert not marker.exists()


def test_numpy_arrays_and_scalars_are_admitted(tmp_path):
    p = tmp_path / "ok.pkl"
    with open(p, "wb") as f:
        pickle.dump({"a": np.arange(3), "b": np.float64(2.5), "c": ("x", [1, 2])}, f)
    out = safe_load_pickle(p)
    np.testing.assert_array_equal(out["a"], [0, 1, 2])
    assert out["b"] == 2.5 and out["c"] == ("x", [1, 2])


@pytest.mark.parametrize("bad, match", [
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [3], "bbx": [0, 0, 1, 1]}]},
     "outside the 1-image database"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": []}, "one entry per query"),
    ({"imlist": ["a"], "qimlist": ["q"], "gnd": [{"easy": [0], "bbx": [5, 0, 1, 1]}]}, "bbx"),
    ([1, 2], "not a revisited ground-truth file"),
])
def test_malformed_groundtruth_gives_one_line_errors(tmp_path, bad, match):
    (tmp_path / "jpg").mkdir()
    with open(tmp_path / "gnd_rparis6k.pkl", "wb") as f:
        pickle.dump(bad, f)
    with pytest.raises(DinoevalError, match=match):
        read_groundtruth(tmp_path, "rparis6k")


def test_missing_files_and_splits(tmp_path):
    with pytest.raises(DinoevalError, match=r"no gnd_roxford5k\.pkl"):
        get_source(f"roxford5k:query@{tmp_path}")
    with pytest.raises(DinoevalError, match="needs its folder"):
        get_source("roxford5k:query")
    folder = make_revisited(tmp_path)
    with pytest.raises(DinoevalError, match="split"):
        get_source(f"roxford5k:queries@{folder}")
    (folder / "jpg" / "db_03.jpg").unlink()
    with pytest.raises(DinoevalError, match="1 database images missing"):
        get_source(f"roxford5k:database@{folder}")
    (folder / "gnd_roxford5k.pkl").write_bytes(b"")
    with pytest.raises(DinoevalError, match="empty"):
        read_groundtruth(folder, "roxford5k")


def test_crop_box_clips_to_the_image():
    img = np.arange(5 * 6 * 3, dtype=np.uint8).reshape(5, 6, 3)
    assert crop_box(img, np.array([-3.0, 1.0, 100.0, 4.4])).shape == (3, 6, 3)
