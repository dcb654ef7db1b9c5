"""The procedural ``shapes`` source: determinism, masks, balance, and that pixels do poorly."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.data import get_source
from dinoeval.data.shapes import (
    BLOCK,
    SHAPE_CLASSES,
    ShapesConfig,
    generate_shapes,
    parse_options,
    shape_mask,
)
from dinoeval.errors import DinoevalError


def _cosine_knn_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                         test_y: np.ndarray, k: int = 20, temperature: float = 0.07) -> float:
    tr = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    te = test_x / np.linalg.norm(test_x, axis=1, keepdims=True)
    sim = te @ tr.T
    idx = np.argpartition(-sim, k, axis=1)[:, :k]
    weight = np.exp(np.take_along_axis(sim, idx, 1) / temperature)
    votes = np.zeros((len(te), int(train_y.max()) + 1))
    np.add.at(votes, (np.arange(len(te))[:, None], train_y[idx]), weight)
    return float((votes.argmax(1) == test_y).mean())


def test_same_config_gives_identical_images_masks_and_labels() -> None:
    cfg = ShapesConfig(split="train", n=40, size=32, seed=3)
    a, b = generate_shapes(cfg), generate_shapes(cfg)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_image_i_does_not_depend_on_n() -> None:
    short = generate_shapes(ShapesConfig(n=30, size=32))
    long = generate_shapes(ShapesConfig(n=BLOCK + 10, size=32))
    np.testing.assert_array_equal(short.images, long.images[:30])
    np.testing.assert_array_equal(short.masks, long.masks[:30])


def test_seeds_and_splits_give_different_images() -> None:
    train = generate_shapes(ShapesConfig(split="train", n=20, size=32)).images
    test = generate_shapes(ShapesConfig(split="test", n=20, size=32)).images
    other = generate_shapes(ShapesConfig(split="train", n=20, size=32, seed=1)).images
    flat = train.reshape(20, -1)
    for imgs in (test, other):
        # no image of one stream equals any image of the other
        eq = (flat[:, None, :] == imgs.reshape(20, -1)[None, :, :]).all(-1)
        assert not eq.any()


def test_masks_cover_exactly_the_pixels_the_object_changed() -> None:
    cfg = ShapesConfig(n=60, size=48, classes=8, seed=5)
    drawn = generate_shapes(cfg)
    empty = generate_shapes(cfg, draw_objects=False)
    changed = (drawn.images != empty.images).any(-1)
    assert not (changed & ~drawn.masks).any()  # nothing outside the mask was touched
    # inside the mask the object colour differs from the background (ties after rounding to
    # uint8 are possible but rare)
    assert (changed & drawn.masks).sum() >= 0.99 * drawn.masks.sum()
    area = drawn.masks.mean(axis=(1, 2))
    assert area.min() > 0.02 and area.max() < 0.4


def test_object_contrasts_with_the_background_under_it() -> None:
    cfg = ShapesConfig(n=60, size=48, seed=2)
    drawn = generate_shapes(cfg)
    empty = generate_shapes(cfg, draw_objects=False)
    luma = np.array([0.299, 0.587, 0.114])
    for img, bg, m in zip(drawn.images, empty.images, drawn.masks, strict=True):
        gap = abs((img[m] @ luma).mean() - (bg[m] @ luma).mean()) / 255
        assert gap > 0.2


def test_classes_are_balanced_and_named() -> None:
    src = get_source("shapes:test@n=100,size=32,classes=4")
    assert src.classes == SHAPE_CLASSES[:4]
    assert np.bincount(src.labels).tolist() == [25, 25, 25, 25]
    assert src.has_masks and src.mask(0).shape == (32, 32) and src.mask(0).dtype == bool
    assert src.load(0).shape == (32, 32, 3) and src.load(0).dtype == np.uint8


@pytest.mark.parametrize(
    ("name", "inside", "outside"),
    [
        ("circle", [(0, 0), (0.79, 0)], [(0.81, 0), (0.6, 0.6)]),
        ("triangle", [(0, 0), (0.95, 0)], [(-0.6, 0), (1.05, 0)]),
        ("square", [(0.69, 0.69), (0, 0)], [(0.71, 0), (0, -0.71)]),
        ("star", [(0.95, 0), (0, 0)], [(0.5 * np.cos(np.pi / 5) + 0.05, 0.5 * np.sin(np.pi / 5))]),
        ("cross", [(0, 0.85), (0.85, 0.2)], [(0.5, 0.5), (0, 0.95)]),
        ("ring", [(0.7, 0), (0, -0.6)], [(0, 0), (0.95, 0)]),
        ("crescent", [(-0.8, 0), (0, 0.85)], [(0, 0), (0.5, 0)]),
        ("L-shape", [(-0.5, -0.7), (0.6, 0.5)], [(0.4, -0.4), (0, 0)]),
    ],
)
def test_shape_membership_on_hand_picked_points(name: str, inside: list, outside: list) -> None:
    label = SHAPE_CLASSES.index(name)
    u_in, v_in = np.array(inside, dtype=float).T
    u_out, v_out = np.array(outside, dtype=float).T
    assert shape_mask(label, u_in, v_in).all()
    assert not shape_mask(label, u_out, v_out).any()


def test_shape_areas_match_geometry() -> None:
    g = np.linspace(-1, 1, 801)
    u, v = np.meshgrid(g, g)
    cell = (g[1] - g[0]) ** 2
    area = {name: shape_mask(i, u, v).sum() * cell for i, name in enumerate(SHAPE_CLASSES)}
    np.testing.assert_allclose(area["circle"], np.pi * 0.8**2, rtol=0.01)
    np.testing.assert_allclose(area["square"], 1.4**2, rtol=0.01)
    np.testing.assert_allclose(area["triangle"], 3 * np.sqrt(3) / 4, rtol=0.01)
    np.testing.assert_allclose(area["ring"], np.pi * (0.9**2 - 0.5**2), rtol=0.01)
    np.testing.assert_allclose(area["star"], 10 * 0.5 * 0.42 * np.sin(np.pi / 5), rtol=0.01)


def test_raw_pixels_do_poorly_and_colour_alone_is_chance() -> None:
    # Measured at the defaults (5000 train / 1000 test, 64 px, 6 classes): 35.6% top-1 (k=20,
    # weighted cosine, `dinoeval knn --ckpt pixels`); 34.0% on this split; chance is 16.7%.
    # The object's and the background's colours are drawn independently of the class, so the
    # mean colour of an image predicts nothing.
    train = get_source("shapes:train@n=1200,size=32")
    test = get_source("shapes:test@n=600,size=32")
    x = train.array().reshape(len(train), -1).astype(np.float32)
    xt = test.array().reshape(len(test), -1).astype(np.float32)
    assert _cosine_knn_accuracy(x, train.labels, xt, test.labels) < 0.4
    colour = train.array().reshape(len(train), -1, 3).mean(1)
    colour_t = test.array().reshape(len(test), -1, 3).mean(1)
    colour, colour_t = colour - colour.mean(0), colour_t - colour.mean(0)
    assert _cosine_knn_accuracy(colour, train.labels, colour_t, test.labels) < 0.25


def test_spec_options_are_parsed_and_bad_ones_named() -> None:
    cfg = parse_options("test", "n=10,size=40,classes=3,seed=7,clutter=0.5")
    assert (cfg.split, cfg.n, cfg.size, cfg.classes, cfg.seed, cfg.clutter) == (
        "test", 10, 40, 3, 7, 0.5)
    assert get_source("shapes:train@n=12,size=32").spec == (
        "shapes:train@n=12,size=32,classes=6,seed=0")
    assert parse_options(None, None) == ShapesConfig(split="train", n=None)
    for bad in ("shapes:val", "shapes:train@n=0", "shapes:train@size=8", "shapes:train@colour=3",
                "shapes:train@n=abc", "shapes:train@classes=9", "shapes:train@clutter=2"):
        with pytest.raises(DinoevalError, match="shapes"):
            get_source(bad)


def test_subset_suffix_keeps_masks() -> None:
    src = get_source("shapes:train@n=50,size=32[:10]")
    assert len(src) == 10 and src.has_masks and src.mask(9).shape == (32, 32)
