"""Multi-crop augmentation: shapes, ranges, determinism, and the individual operations."""

from __future__ import annotations

import pytest
import torch

from pretrain.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiCrop,
    crop_boxes,
    eval_views,
    gaussian_blur,
    hue_rotate,
    random_resized_crop,
    solarize,
)


def _unnormalize(x: torch.Tensor) -> torch.Tensor:
    m = torch.tensor(IMAGENET_MEAN)[None, :, None, None]
    s = torch.tensor(IMAGENET_STD)[None, :, None, None]
    return x * s + m


@pytest.fixture
def gray_batch() -> torch.Tensor:
    return torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("rgb", [False, True])
def test_views_have_dino_shapes_and_valid_ranges(gray_batch, rgb):
    images = gray_batch[..., None].repeat(1, 1, 1, 3) if rgb else gray_batch
    aug = MultiCrop(global_size=24, local_size=12, local_number=3)
    g, loc = aug(images, torch.Generator().manual_seed(1))
    assert g.shape == (10, 3, 24, 24) and g.dtype == torch.float32
    assert loc is not None and loc.shape == (15, 3, 12, 12)
    for v in (g, loc):
        raw = _unnormalize(v)
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
        assert torch.isfinite(v).all()


def test_grayscale_input_gives_identical_channels(gray_batch):
    g, _ = MultiCrop(global_size=28, local_size=12, local_number=0)(
        gray_batch, torch.Generator().manual_seed(0))
    raw = _unnormalize(g)
    torch.testing.assert_close(raw[:, 0], raw[:, 1])
    torch.testing.assert_close(raw[:, 1], raw[:, 2])


def test_same_seed_same_views_and_views_differ(gray_batch):
    aug = MultiCrop(global_size=16, local_size=8, local_number=2)
    a = aug(gray_batch, torch.Generator().manual_seed(5))
    b = aug(gray_batch, torch.Generator().manual_seed(5))
    c = aug(gray_batch, torch.Generator().manual_seed(6))
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.allclose(a[0], c[0])
    assert not torch.allclose(a[0][:5], a[0][5:])  # the two global views of an image differ


def test_flip_mirrors_the_same_crop():
    x = torch.rand(2, 3, 8, 8)
    boxes = crop_boxes(1000, 8, 8, (1.0, 1.0), torch.Generator().manual_seed(0), ratio=(1, 1))
    torch.testing.assert_close(boxes[:, 2:], torch.ones(1000, 2))  # scale 1, ratio 1: whole image
    y = random_resized_crop(x, 8, (1.0, 1.0), torch.Generator().manual_seed(0), flip_p=0.0)
    flipped = random_resized_crop(x, 8, (1.0, 1.0), torch.Generator().manual_seed(0), flip_p=1.0)
    torch.testing.assert_close(flipped, y.flip(-1))


def test_crop_boxes_respect_scale_and_stay_inside():
    b = crop_boxes(2000, 28, 28, (0.05, 0.4), torch.Generator().manual_seed(0))
    area = b[:, 2] * b[:, 3]
    assert area.max() <= 0.4 + 1e-6 and area.min() >= 0.0
    assert (b[:, 0] - b[:, 2] / 2 >= -1e-6).all() and (b[:, 0] + b[:, 2] / 2 <= 1 + 1e-6).all()
    assert (b[:, 1] - b[:, 3] / 2 >= -1e-6).all() and (b[:, 1] + b[:, 3] / 2 <= 1 + 1e-6).all()


def test_blur_keeps_constant_images_and_mean_and_skips_unselected():
    x = torch.full((3, 1, 16, 16), 0.3)
    sig = torch.tensor([1.0, 2.0, 1.5])
    on = torch.tensor([True, True, True])
    torch.testing.assert_close(gaussian_blur(x, sig, on), x)
    noise = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = gaussian_blur(noise, sig, torch.tensor([True, False, True]))
    torch.testing.assert_close(y[1], noise[1])
    assert y[0].std() < noise[0].std()


def test_solarize_and_hue_rotation():
    x = torch.tensor([0.2, 0.5, 0.9]).reshape(1, 1, 1, 3).expand(2, 1, 1, 3)
    y = solarize(x, torch.tensor([True, False]))
    torch.testing.assert_close(y[0].flatten(), torch.tensor([0.2, 0.5, 0.1]))
    torch.testing.assert_close(y[1], x[1])
    rgb = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    torch.testing.assert_close(hue_rotate(rgb, torch.zeros(2)), rgb)
    torch.testing.assert_close(hue_rotate(rgb, torch.ones(2)), rgb, atol=1e-5, rtol=1e-5)


def test_eval_views_resize_and_normalise(gray_batch):
    v = eval_views(gray_batch, 16)
    assert v.shape == (5, 3, 16, 16)
    raw = _unnormalize(v)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        MultiCrop(global_size=8, local_size=4, local_number=1)(torch.rand(2, 8, 8),
                                                               torch.Generator())
