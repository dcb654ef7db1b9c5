"""Every PIL image mode decodes faithfully to RGB or is refused by name (issue 17, item 3).

Each test writes a generated image to a file in the format scientists use for that mode and reads
it back through the sources' decoder (``read_rgb``), comparing with the documented rule.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dinoeval.data._decode import UnsupportedModeError, to_rgb
from dinoeval.data.builtin import BadImageError, read_rgb


def _grey(rgb: np.ndarray) -> np.ndarray:
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0]


def _ramp16(lo: int, hi: int) -> np.ndarray:
    return np.linspace(lo, hi, 6 * 7).round().astype(np.uint16).reshape(6, 7)


@pytest.mark.parametrize("lo,hi", [(0, 65535), (100, 4095), (30000, 30600)])
def test_16_bit_png_keeps_its_contrast(tmp_path, lo, hi):
    values = _ramp16(lo, hi)
    Image.fromarray(values).save(tmp_path / "a.png")  # a 16-bit greyscale PNG
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode in ("I;16", "I")
    got = _grey(read_rgb(tmp_path / "a.png"))
    want = np.rint((values - lo) * 255.0 / (hi - lo))
    np.testing.assert_array_equal(got, want)
    assert got.min() == 0 and got.max() == 255 and len(np.unique(got)) == values.size


@pytest.mark.parametrize("mode,dtype", [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2"),
                                        ("I;16N", "=u2")])
def test_every_16_bit_byte_order(mode, dtype):
    values = _ramp16(1000, 9000)
    im = Image.frombytes(mode, (7, 6), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(_grey(to_rgb(im)), np.rint((values - 1000) * 255.0 / 8000))


def test_32_bit_integer_tiff_with_negative_values(tmp_path):
    values = np.linspace(-70000, 200000, 42).round().astype(np.int32).reshape(6, 7)
    Image.fromarray(values, mode="I").save(tmp_path / "a.tif")
    got = _grey(read_rgb(tmp_path / "a.tif"))
    np.testing.assert_array_equal(got, np.rint((values + 70000) * 255.0 / 270000))


def test_float_tiff_in_unit_range_is_times_255_not_black(tmp_path):
    values = np.linspace(0.0, 0.5, 42, dtype=np.float32).reshape(6, 7)
    Image.fromarray(values, mode="F").save(tmp_path / "a.tif")
    got = _grey(read_rgb(tmp_path / "a.tif"))
    np.testing.assert_array_equal(got, np.rint(values.astype(np.float64) * 255))
    assert got.max() == 128  # a half-bright image stays half-bright


def test_float_tiff_outside_unit_range_is_stretched_never_saturated(tmp_path):
    values = np.linspace(-3.0, 1500.0, 42, dtype=np.float32).reshape(6, 7)
    Image.fromarray(values, mode="F").save(tmp_path / "a.tif")
    got = _grey(read_rgb(tmp_path / "a.tif"))
    v = values.astype(np.float64)
    np.testing.assert_array_equal(got, np.rint((v - v.min()) * 255.0 / (v.max() - v.min())))
    assert (got == 255).sum() == 1 and (got == 0).sum() == 1


def test_float_with_nan_is_refused_naming_the_file(tmp_path):
    values = np.zeros((4, 4), np.float32)
    values[1, 1] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    with pytest.raises(BadImageError, match=r"nan\.tif: .*mode 'F'\) holds NaN"):
        read_rgb(tmp_path / "nan.tif")


def test_la_png_is_composited_over_white(tmp_path):
    grey = np.full((4, 5), 40, np.uint8)
    alpha = np.array([0, 64, 128, 255, 255], np.uint8)[None].repeat(4, 0)
    Image.fromarray(np.dstack([grey, alpha]), mode="LA").save(tmp_path / "a.png")
    got = _grey(read_rgb(tmp_path / "a.png"))
    a = alpha / 255.0
    np.testing.assert_array_equal(got, np.rint(40 * a + 255 * (1 - a)))


def test_rgba_png_is_composited_over_white(tmp_path):
    rgb = np.zeros((3, 4, 3), np.uint8)
    rgb[..., 0] = 200
    alpha = np.array([0, 51, 204, 255], np.uint8)[None].repeat(3, 0)
    Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA").save(tmp_path / "a.png")
    got = read_rgb(tmp_path / "a.png")
    a = (alpha / 255.0)[..., None]
    np.testing.assert_array_equal(got, np.rint(rgb * a + 255 * (1 - a)))
    assert (got[:, 0] == 255).all()  # fully transparent: white, not the hidden red


def test_palette_with_a_transparent_entry(tmp_path):
    im = Image.new("P", (4, 2))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # 0 black (transparent), 1 red
    im.putdata([0, 1, 0, 1, 1, 1, 0, 0])
    im.save(tmp_path / "a.png", transparency=0)
    with Image.open(tmp_path / "a.png") as check:
        assert check.mode == "P" and "transparency" in check.info
    got = read_rgb(tmp_path / "a.png")
    want = np.array([[255, 255, 255], [255, 0, 0]], np.uint8)[np.array([0, 1, 0, 1, 1, 1, 0, 0])]
    np.testing.assert_array_equal(got, want.reshape(2, 4, 3))


def test_palette_without_transparency_and_1_bit(tmp_path):
    im = Image.new("P", (2, 1))
    im.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    im.putdata([1, 0])
    im.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "p.png"), [[[200, 100, 50], [10, 20, 30]]])
    Image.fromarray(np.array([[True, False]])).save(tmp_path / "b.png")
    np.testing.assert_array_equal(read_rgb(tmp_path / "b.png"), [[[255] * 3, [0] * 3]])


def test_cmyk_jpeg_and_tiff(tmp_path):
    cmyk = np.array([[[0, 0, 0, 0], [255, 0, 0, 0], [0, 0, 0, 255], [51, 102, 153, 51]]],
                    np.uint8)
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "a.tif")
    got = read_rgb(tmp_path / "a.tif")
    c, k = cmyk[..., :3] / 255.0, cmyk[..., 3:] / 255.0
    np.testing.assert_allclose(got, 255 * (1 - c) * (1 - k), atol=1)
    np.testing.assert_array_equal(got[0, :3], [[255, 255, 255], [0, 255, 255], [0, 0, 0]])


def test_unsupported_modes_are_refused_by_name(tmp_path):
    im = Image.new("LAB", (2, 2))
    with pytest.raises(UnsupportedModeError, match=r"image mode 'LAB' has no faithful RGB"):
        to_rgb(im)
    im.save(tmp_path / "lab.tif")
    with pytest.raises(BadImageError, match=r"lab\.tif: .*image mode 'LAB'"):
        read_rgb(tmp_path / "lab.tif")
