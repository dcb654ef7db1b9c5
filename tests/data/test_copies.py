"""Procedural copy benchmark and the Copydays layout reader."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinoeval.data._base import ArraySource
from dinoeval.data.copies import copydays, procedural_copies, strong_copy
from dinoeval.errors import DinoevalError


def _source(n=40, size=32, gray=False):
    rng = np.random.default_rng(0)
    shape = (n, size, size) if gray else (n, size, size, 3)
    return ArraySource(rng.integers(0, 255, shape, dtype=np.uint8), np.arange(n) % 3,
                       spec="rand", name="rand", split="all", classes=("a", "b", "c"))


def test_procedural_copies_are_seeded_disjoint_and_strong():
    src = _source()
    b = procedural_copies(src, n_originals=6, n_distractors=10, n_whitening=8,
                          copies_per_original=2, seed=3)
    assert len(b.queries) == 12 and len(b.database) == 16 and len(b.whitening) == 8
    assert [p.tolist() for p in b.positives] == [[j] for j in range(6)] * 2
    # database and whitening images are disjoint draws from the source
    db = {b.database.load(i).tobytes() for i in range(16)}
    wh = {b.whitening.load(i).tobytes() for i in range(8)}
    assert not db & wh
    # each copy keeps the size but differs a lot from its original
    for q in range(6):
        copy, orig = b.queries.load(q), b.database.load(q)
        assert copy.shape == orig.shape
        assert np.abs(copy.astype(int) - orig.astype(int)).mean() > 10
    again = procedural_copies(src, n_originals=6, n_distractors=10, n_whitening=8,
                              copies_per_original=2, seed=3)
    np.testing.assert_array_equal(again.queries.array(), b.queries.array())
    other = procedural_copies(src, n_originals=6, n_distractors=10, n_whitening=8,
                              copies_per_original=2, seed=4)
    assert not np.array_equal(other.queries.array(), b.queries.array())
    assert b.queries.fingerprint() != other.queries.fingerprint()


def test_grayscale_sources_give_grayscale_copies():
    b = procedural_copies(_source(gray=True), n_originals=3, n_distractors=2, n_whitening=0)
    assert b.queries.grayscale and b.queries.array().shape == (3, 32, 32)
    assert b.whitening is None


def test_strong_copy_depends_only_on_its_seed():
    img = _source().load(0)
    a = strong_copy(img, np.random.default_rng([1, 2]))
    np.testing.assert_array_equal(a, strong_copy(img, np.random.default_rng([1, 2])))
    assert a.shape == img.shape and a.dtype == np.uint8


def test_procedural_copies_refuse_impossible_counts():
    with pytest.raises(DinoevalError, match="needs 50 images"):
        procedural_copies(_source(), n_originals=20, n_distractors=20, n_whitening=10)
    with pytest.raises(DinoevalError, match="originals must be >= 1"):
        procedural_copies(_source(), n_originals=0)


def test_copydays_layout(tmp_path):
    rng = np.random.default_rng(0)
    for sub, names in (("original", ["200000.jpg", "200100.jpg", "200200.jpg"]),
                       ("strong", ["200000.jpg", "200001.jpg", "200200.jpg"])):
        (tmp_path / sub).mkdir()
        for n in names:
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / sub / n)
    distractors = _source(n=5, size=8)
    b = copydays(tmp_path, distractors=distractors)
    # positives by 4-character prefix: "2000" (two copies of 200000.jpg) and "2002"
    assert [p.tolist() for p in b.positives] == [[0], [0], [2]]
    assert len(b.database) == 8 and b.n_originals == 3
    assert b.database.load(3).shape == (8, 8, 3) and b.database.load(0).shape == (20, 24, 3)
    with pytest.raises(DinoevalError, match="original/ and strong/"):
        copydays(tmp_path / "nowhere")
