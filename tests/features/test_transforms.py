"""The eval transform against torchvision's ``Resize(256)`` + ``CenterCrop(224)`` (official DINO
``eval_knn.py`` / ``eval_linear.py``), on odd sizes and every common PIL mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from dinoeval.data import ImageFolderSource
from dinoeval.features.transforms import EvalTransform, resized_size

SIZES = [(640, 427), (350, 260), (500, 375), (300, 900)]  # (W, H) as PIL writes them
MAX_DIFF, MEAN_DIFF = 2 / 255, 0.5 / 255  # the tolerance documented in resize_center_crop

_official = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
                       T.CenterCrop(224), T.ToTensor()])
_ours = EvalTransform(size=(224, 224), mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


def _smooth(w: int, h: int, seed: int) -> np.ndarray:
    """A photograph-like (spatially smooth) random RGB image ``(h, w, 3) uint8``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((w, h), Image.BILINEAR))


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_resized_size_truncates_like_torchvision(w: int, h: int) -> None:
    tw, th = T.Resize(256)(Image.new("RGB", (w, h))).size
    assert resized_size(h, w, 256) == (th, tw)
    assert resized_size(427, 640, 256) == (256, 383)  # the example (rounding gave 384)


@pytest.mark.parametrize(("w", "h"), SIZES)
def test_eval_transform_matches_torchvision_resize_center_crop(w: int, h: int) -> None:
    img = _smooth(w, h, seed=w + h)
    ref = _official(Image.fromarray(img))
    got = _ours(img[None])[0]
    assert got.shape == ref.shape == (3, 224, 224)
    diff = (got - ref).abs()
    assert float(diff.max()) <= MAX_DIFF and float(diff.mean()) <= MEAN_DIFF
    # white noise: PIL clips between its two passes, isolated pixels differ more; the crop
    # window is still the same (a shifted crop gives a mean difference of ~20/255 here)
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    diff = (_ours(noise[None])[0] - _official(Image.fromarray(noise))).abs()
    assert float(diff.mean()) <= MEAN_DIFF and float(diff.max()) <= 30 / 255


def _save(img: np.ndarray, mode: str, path) -> None:
    pil = Image.fromarray(img)
    if mode == "RGBA":  # opaque alpha: compositing a transparent one is the decoder's choice
        pil.putalpha(255)
        pil.save(path.with_suffix(".png"))
    elif mode == "L":
        pil.convert("L").save(path.with_suffix(".png"))
    elif mode == "P":
        pil.convert("P", palette=Image.ADAPTIVE, colors=256).save(path.with_suffix(".png"))
    elif mode == "CMYK":
        pil.convert("CMYK").save(path.with_suffix(".tif"))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK"])
def test_image_modes_through_the_folder_source_match_the_official_loader(tmp_path, mode) -> None:
    (tmp_path / "c").mkdir()
    for i, (w, h) in enumerate(SIZES):
        _save(_smooth(w, h, seed=i), mode, tmp_path / "c" / f"{i}")
    src = ImageFolderSource(tmp_path)
    assert len(src) == len(SIZES)
    for i, path in enumerate(src.paths):
        with Image.open(path) as im:
            assert im.mode == mode
            ref = _official(im.convert("RGB"))  # the official pil_loader
        got = _ours(src.load(i)[None])[0]
        assert got.shape == ref.shape
        diff = (got - ref).abs()
        assert float(diff.max()) <= MAX_DIFF and float(diff.mean()) <= MEAN_DIFF, (mode, path)


def test_small_square_images_are_resized_whole() -> None:
    x = torch.zeros(1, 28, 28, dtype=torch.uint8)
    assert EvalTransform(size=(32, 32), crop_ratio=1.0)(x).shape == (1, 3, 32, 32)
