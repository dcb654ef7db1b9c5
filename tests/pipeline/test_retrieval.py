"""Retrieval and copy-detection runners: features in hand, then end to end from specs."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.data._base import ArraySource
from dinoeval.data.copies import procedural_copies
from dinoeval.errors import DinoevalError
from dinoeval.features import FeatureSet
from dinoeval.pipeline import BackboneOptions, ExtractOptions
from dinoeval.pipeline.retrieval import (
    CopyDetectionConfig,
    RetrievalConfig,
    evaluate_copy_detection,
    evaluate_retrieval,
    run_copy_detection,
    run_retrieval,
)
from tests.data.test_roxford import make_revisited


def _fs(x, labels=None):
    x = np.asarray(x, np.float32)
    labels = np.full(len(x), -1) if labels is None else np.asarray(labels)
    return FeatureSet(features=x, labels=labels.astype(np.int64), indices=np.arange(len(x)))


@pytest.fixture
def tiny_ckpt(narrow_vit_file):
    return narrow_vit_file


def test_label_retrieval_of_separated_classes_is_perfect_without_the_query_itself():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 10
    labels = np.repeat(np.arange(3), 5)
    x = centers[labels] + rng.normal(size=(15, 8)) * 0.01
    fs = _fs(x, labels)
    (res,), top = evaluate_retrieval(fs, fs, RetrievalConfig(show=2), same_set=True)
    assert res.protocol == "labels" and res.mean_ap == pytest.approx(1.0)
    assert res.precision_at[1] == 1.0 and res.recall_at[5] == pytest.approx(1.0)  # 4 positives
    # the query itself comes first, marked junk
    assert top.hits[:, 0].tolist() == [0, 1] and top.marks[:, 0].tolist() == [-1, -1]
    assert (top.marks[:, 1:] == 1).all()


def test_groundtruth_retrieval_matches_hand_computation_and_query_blocks_do_not_matter(
        monkeypatch):
    import dinoeval.pipeline.retrieval as runner
    from dinoeval.data.roxford import RevisitedGroundTruth

    # one query at angle 0; gallery items at increasing angles -> ranking 0, 1, 2, 3, 4
    ang = np.array([0.0, 0.1, 0.2, 0.3, 0.4])
    gallery = _fs(np.stack([np.cos(ang), np.sin(ang)], 1))
    queries = _fs(np.array([[1.0, 0.0], [np.cos(0.4), np.sin(0.4)]]))
    gt = RevisitedGroundTruth(
        name="x", folder=None, imlist=tuple("abcde"), qimlist=("q", "r"),
        easy=(np.array([1]), np.array([4])), hard=(np.array([3]), np.array([0])),
        junk=(np.array([2]), np.array([], np.int64)), bbx=np.full((2, 4), np.nan))
    cfg = RetrievalConfig(protocols=("medium", "hard"), ks=(1, 2))
    (med, hard), _ = evaluate_retrieval(queries, gallery, cfg, groundtruth=gt)
    # query 0, medium: ok {1, 3}, junk {2}: junk-free [0, 1, 3, 4] -> ranks 1 and 2
    ap0 = ((0 + 1 / 2) / 2 + (1 / 2 + 2 / 3) / 2) / 2
    # query 1 ranks 4, 3, 2, 1, 0; medium ok {4, 0}: ranks 0 and 4
    ap1 = (1 + (1 / 4 + 2 / 5) / 2) / 2
    assert med.ap.tolist() == pytest.approx([ap0, ap1])
    # hard: query 0 ok {3}, junk {2, 1} -> [0, 3, 4]: rank 1; query 1 ok {0}, junk {4}
    # -> [3, 2, 1, 0]: rank 3
    assert hard.ap.tolist() == pytest.approx([(0 + 1 / 2) / 2, (0 + 1 / 4) / 2])
    monkeypatch.setattr(runner, "QUERY_BLOCK_MAX", 1)  # one query per search call
    (med2, _), _ = evaluate_retrieval(queries, gallery, cfg, groundtruth=gt)
    np.testing.assert_allclose(med2.ap, med.ap)


def test_copy_detection_finds_near_duplicates_after_whitening():
    rng = np.random.default_rng(0)
    db = rng.normal(size=(40, 6))
    q = db[:10] + rng.normal(size=(10, 6)) * 0.05
    wh = rng.normal(size=(50, 6)) * np.array([5, 1, 1, 1, 1, 0.2])
    res, top, w = evaluate_copy_detection(
        _fs(q), _fs(db), tuple(np.array([i]) for i in range(10)), CopyDetectionConfig(),
        whitening=_fs(wh))
    assert res.mean_ap == pytest.approx(1.0) and w is not None and w.projection.shape == (6, 6)
    assert top.hits[:, 0].tolist() == list(range(8))


def test_retrieval_on_a_revisited_fixture_end_to_end(tmp_path, tiny_ckpt):
    folder = make_revisited(tmp_path)
    bopts, eopts = BackboneOptions(), ExtractOptions(batch_size=4)
    run = run_retrieval(tiny_ckpt, f"roxford5k:query@{folder}", backbone_opts=bopts,
                        extract_opts=eopts, config=RetrievalConfig(protocols=("easy", "hard")))
    df = run.frame
    assert set(df["eval"]) == {"retrieval"} and set(df["dataset"]) == {"roxford5k"}
    assert set(df["feature"]) == {"cls@16 long"}  # DINO's default: aspect kept
    maps = df[df.metric == "mAP"].set_index("param")["value"]
    assert set(maps.index) == {"protocol=easy", "protocol=hard"}
    assert ((maps >= 0) & (maps <= 1)).all()
    assert len(run.gallery_source) == 8 and run.top.hits.shape == (2, 5)
    # query 1 has no hard positive: left out of the hard mean
    assert df[(df.metric == "mAP") & (df.param == "protocol=hard")]["n"].iloc[0] == 1
    ms = run_retrieval(tiny_ckpt, f"roxford5k:query-full@{folder}", backbone_opts=bopts,
                       extract_opts=eopts, config=RetrievalConfig(multiscale=True))
    assert set(ms.frame["feature"]) == {"cls@16 long multiscale"}


def test_copy_detection_end_to_end_on_procedural_copies(tiny_ckpt):
    rng = np.random.default_rng(0)
    src = ArraySource(rng.integers(0, 255, (60, 16, 16, 3), dtype=np.uint8), np.zeros(60),
                      spec="rand", name="rand", split="all", classes=("a",))
    bench = procedural_copies(src, n_originals=8, n_distractors=12, n_whitening=20)
    for spec in (tiny_ckpt, "pixels"):
        run = run_copy_detection(spec, bench, extract_opts=ExtractOptions(batch_size=8),
                                 config=CopyDetectionConfig(img_size=16))
        df = run.frame
        assert set(df["eval"]) == {"copy-detection"} and set(df["split"]) == {"copies"}
        m = df[df.metric == "mAP"]["value"].iloc[0]
        assert 0 < m <= 1 and df[df.metric == "mAP"]["n"].iloc[0] == 8
    assert set(run.frame["feature"]) == {"pixels whitened^0.5"}


def test_bad_inputs_are_refused_before_the_work(tmp_path, tiny_ckpt):
    folder = make_revisited(tmp_path)
    with pytest.raises(DinoevalError, match="query split"):
        run_retrieval(tiny_ckpt, f"roxford5k:database@{folder}")
    with pytest.raises(DinoevalError, match="both its query and database"):
        run_retrieval(tiny_ckpt, f"roxford5k:query@{folder}", "digits:test[:10]")
    with pytest.raises(DinoevalError, match="pixels have no scales"):
        run_retrieval("pixels", "digits:test[:10]", config=RetrievalConfig(multiscale=True))
    with pytest.raises(DinoevalError, match="--protocol"):
        RetrievalConfig(protocols=("medum",))
    with pytest.raises(DinoevalError, match="--k"):
        RetrievalConfig(ks=(0,))
