"""Aspect-preserving input (DINO's retrieval script, the revisited protocol): sizes by hand,
images of many shapes batched by shape, features equal to one forward per image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dinoeval.data.copies import ListSource
from dinoeval.features.extract import extract_features, feature_meta, make_transform
from dinoeval.features.pooling import average_then_normalize
from dinoeval.features.transforms import EvalTransform, aspect_size
from dinoeval.models import ViTArch, build_vit, load_backbone
from dinoeval.pipeline import ExtractOptions
from dinoeval.pipeline.retrieval_features import (
    feature_label,
    features_at,
    rescaled,
    retrieval_features,
)

# (H, W) of each test image; patch 4, input side 16
SHAPES = [(30, 40), (50, 20), (40, 30), (30, 40), (16, 16), (64, 48), (30, 40)]
# long side -> 16, the other rounded, both cut to whole patches (worked by hand):
# 30x40 -> 12x16; 50x20 -> 16x6.4 -> 16x6 -> 16x4; 40x30 -> 16x12; 16x16 -> 16x16;
# 64x48 -> 16x12
KEPT_LONG = [(12, 16), (16, 4), (16, 12), (12, 16), (16, 16), (16, 12), (12, 16)]
RESIZED_LONG = [(12, 16), (16, 6), (16, 12), (12, 16), (16, 16), (16, 12), (12, 16)]


@pytest.fixture
def vit(tmp_path):
    arch = ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=4, img_size=(16, 16))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_vit(arch)
        with torch.no_grad():  # position embeddings that matter, so the grid shows
            model.pos_embed.normal_(0, 0.5)
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return load_backbone(str(path))


@pytest.fixture
def mixed() -> ListSource:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (*s, 3), dtype=np.uint8) for s in SHAPES]
    return ListSource(images, spec="mixed", name="mixed", split="all",
                      labels=np.arange(len(images)) % 2)


def test_aspect_sizes_worked_by_hand():
    for (h, w), resized, kept in zip(SHAPES, RESIZED_LONG, KEPT_LONG, strict=True):
        assert aspect_size(h, w, 16, "long", 4) == (resized, kept)
    # shorter side -> 16: 30x40 -> 16x21.33 -> 16x21 -> 16x20
    assert aspect_size(30, 40, 16, "short", 4) == ((16, 21), (16, 20))
    # revisited Oxford at DINO's 224, patch 16: 768x1024 -> 168x224 -> 160x224 seen
    assert aspect_size(768, 1024, 224, "long", 16) == ((168, 224), (160, 224))
    # a sliver keeps one patch
    assert aspect_size(4, 100, 16, "long", 4) == ((4, 16), (4, 16))


@pytest.mark.parametrize(("w", "h"), [(1024, 768), (768, 1024), (1024, 683), (683, 1024),
                                      (1024, 576), (500, 333)])
def test_long_side_sizes_match_pil_thumbnail(w, h):
    # DINO's eval_image_retrieval.py: img.thumbnail((224, 224)) on images larger than 224
    img = Image.new("RGB", (w, h))
    img.thumbnail((224, 224))
    assert aspect_size(h, w, 224, "long")[0] == (img.height, img.width)


def _per_image(backbone, image: np.ndarray, size: tuple[int, int], kept: tuple[int, int]):
    """One forward of one image resized to ``size`` and cut to ``kept``: the reference."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    x = x.clamp(0, 1)[..., : kept[0], : kept[1]]
    mean = torch.tensor(backbone.mean).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        tokens = backbone.tokens((x - mean) / std)[-1]
    assert tokens.shape[1] == 1 + (kept[0] // 4) * (kept[1] // 4)  # the grid it was fed
    return tokens[0, 0].numpy()


def test_mixed_shapes_batched_by_shape_equal_one_forward_per_image(vit, mixed):
    ref = np.stack([_per_image(vit, mixed.load(i), RESIZED_LONG[i], KEPT_LONG[i])
                    for i in range(len(mixed))])
    for batch_size in (1, 2, 8):  # 1: DINO's script; 2: groups fill and flush out of order
        fs = extract_features(vit, mixed, kind="cls", batch_size=batch_size, crop_ratio=1.0,
                              keep_aspect="long")
        assert fs.indices.tolist() == list(range(len(mixed)))  # back in source order
        assert fs.labels.tolist() == mixed.labels.tolist()
        np.testing.assert_allclose(fs.features, ref, rtol=1e-5, atol=1e-5)


def test_the_input_handling_changes_the_cache_key_and_the_row_label(vit, mixed, tmp_path):
    keys = {mode: feature_meta(vit, mixed, "cls", make_transform(vit, mixed, 1.0, mode),
                               "fp32")["key"]["transform"] for mode in ("", "long", "short")}
    assert len(set(keys.values())) == 3
    # the centre-crop transform's key is what it was before aspect modes existed
    assert "keep_aspect" not in EvalTransform(size=(16, 16)).key()
    assert [feature_label(vit, m) for m in ("long", "square")] == ["cls@16 long",
                                                                     "cls@16 square"]
    opts = ExtractOptions(batch_size=4, cache_dir=str(tmp_path / "cache"))
    long_ = features_at(vit, mixed, "cls", opts, None, "long")
    square = features_at(vit, mixed, "cls", opts, None, "square")
    assert not np.allclose(long_.features[0], square.features[0])  # 30x40: not a square
    assert len(list((tmp_path / "cache").rglob("meta.json"))) == 2
    again = features_at(vit, mixed, "cls", opts, None, "long")  # a cache hit, not the other
    np.testing.assert_array_equal(again.features, long_.features)


def test_multiscale_is_the_normalised_mean_of_three_hand_sized_forwards(vit, mixed):
    sub = ListSource([mixed.load(0), mixed.load(1)], spec="two", name="two", split="all")
    # sides 16, 12, 8 (multiscale_sizes(16, 4)); 30x40 -> 12x16, 9x12 -> 8x12, 6x8 -> 4x8;
    # 50x20 -> 16x6 -> 16x4, 12x5 -> 12x4, 8x3 -> 8x4 (at least one patch)
    sizes = [[((12, 16), (12, 16)), ((9, 12), (8, 12)), ((6, 8), (4, 8))],
             [((16, 6), (16, 4)), ((12, 5), (12, 4)), ((8, 4), (8, 4))]]
    ref = average_then_normalize([
        np.stack([_per_image(vit, sub.load(i), *sizes[i][s]) for i in range(2)])
        for s in range(3)])
    (fs,), label = retrieval_features(vit, [sub], ExtractOptions(batch_size=2), True, None,
                                      resize="long")
    assert label == "cls@16 long multiscale" and fs.meta["multiscale"] == [16, 12, 8]
    np.testing.assert_allclose(fs.features, ref, rtol=1e-5, atol=1e-5)
    assert rescaled(vit, 8).img_size == (8, 8) and vit.img_size == (16, 16)


def test_pixels_and_bad_modes_are_refused_or_squared(mixed):
    from dinoeval.errors import DinoevalError

    pixels = load_backbone("pixels", pixel_size=8)
    fs = features_at(pixels, mixed, "cls", ExtractOptions(), None, "long")  # one length
    assert fs.features.shape == (len(mixed), 8 * 8 * 3)
    assert feature_label(pixels, "long") == "pixels"
    with pytest.raises(DinoevalError, match="ViT"):
        make_transform(pixels, mixed, 1.0, "long")
    with pytest.raises(DinoevalError, match="--resize"):
        features_at(pixels, mixed, "cls", ExtractOptions(), None, "wide")


def test_an_unreadable_file_among_mixed_shapes_is_named_or_skipped(vit, tmp_path):
    from dinoeval.data.builtin import BadImageError
    from dinoeval.data.copies import FileListSource

    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(30, 40), (40, 30), (20, 20)]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    paths.insert(1, tmp_path / "broken.png")
    paths[1].write_bytes(b"not a png")
    src = FileListSource(paths, spec="files", name="files", split="all")
    with pytest.raises(BadImageError, match=r"broken\.png"):
        extract_features(vit, src, crop_ratio=1.0, keep_aspect="long", batch_size=2)
    fs = extract_features(vit, src, crop_ratio=1.0, keep_aspect="long", batch_size=2,
                          skip_bad_images=True)
    assert fs.indices.tolist() == [0, 2, 3] and fs.meta["skipped"] == 1
