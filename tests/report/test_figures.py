"""Overlays and plots: shapes, colours and known pixels."""

from __future__ import annotations

import numpy as np

from dinoeval.report import figures as F


def test_colorize_maps_min_to_first_and_max_to_last_colour():
    rgb = F.colorize(np.array([[0.0, 0.5], [1.0, 0.25]]), "gray")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and (rgb[1, 0] == 255).all()
    assert (F.colorize(np.ones((2, 2))) == F.colorize(np.zeros((2, 2)))).all()  # flat map


def test_heat_overlay_grows_the_patch_grid_to_the_image():
    img = np.zeros((8, 12, 3), np.uint8)
    attn = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    out = F.heat_overlay(img, attn, alpha=1.0, cmap="gray")
    assert out.shape == (8, 12, 3)
    assert (out[:4, 4:8] == 255).all() and (out[:4, :4] == 0).all() and (out[4:] == 0).all()


def test_mask_overlay_dims_outside_and_outlines_the_mask():
    img = np.full((6, 6, 3), 100, np.uint8)
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    out = F.mask_overlay(img, mask, color=(0, 0, 255), dim=0.5)
    assert (out[0, 0] == 50).all()  # outside: dimmed
    assert (out[1, 1] == (0, 0, 255)).all() and (out[1, 3] == (0, 0, 255)).all()  # outline
    assert (out[2, 2] != (0, 0, 255)).any() and out[2, 2, 2] > 100  # inside: tinted


def test_display_size_grows_small_tiles_by_integer_factors_and_shrinks_large_ones():
    assert F.display_size((28, 28)) == (112, 112)
    assert F.display_size((20, 33)) == (80, 132)
    assert F.display_size((480, 640)) == (144, 192)
    assert F.display_size((150, 120)) == (150, 120)
    mask = np.zeros((4, 6), bool)
    mask[0, 0] = True
    grown = F.resize_mask(mask, (8, 12))
    assert grown[:2, :2].all() and grown.sum() == 4


def test_tile_grid_and_plots_render(tmp_path):
    tiles = [[np.zeros((10, 20, 3), np.uint8), None], [np.full((30, 30, 3), 255, np.uint8)]]
    canvas = F.tile_grid(tiles, tile=32, gap=2)
    assert canvas.shape == (68, 68, 3)
    fig = F.plot_tile_grid(tiles, row_labels=["a", "b"], col_labels=["x", "y"], title="t")
    png = F.figure_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    for fig in (F.plot_jaccard(["a", "b"], [np.array([0.1, 0.5]), np.array([0.3])], [0.2, 0.4]),
                F.plot_lines({"a": np.arange(3)}, {"a": np.array([1, np.nan, 3])}),
                F.plot_bars(["x", "y"], {"m": [1.0, 2.0]})):
        assert len(F.figure_png(fig)) > 1000


def test_plots_draw_into_a_given_axes():
    from matplotlib.figure import Figure

    fig = Figure()
    ax = fig.add_subplot()
    assert F.plot_bars(["x"], {"m": [1.0]}, ax=ax) is fig
    assert len(ax.patches) == 1
