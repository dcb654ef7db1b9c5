"""Figures for reports: attention overlays as RGB arrays, and matplotlib plots.

Overlay functions take arrays and return ``(H, W, 3) uint8`` images (cheap enough for hundreds of
tiles). Plot functions take computed arrays and ``ax=None``, import matplotlib inside (Agg
backend), and return the figure, in the manner of scikit-learn's displays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

HEAT_CMAP = "inferno"
MASK_COLOR = (0, 210, 255)


def _new_ax(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    """The given axes' figure, or a new Agg figure (no pyplot: no global state, no display)."""
    if ax is not None:
        return ax.figure, ax
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _middle_ellipsis(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (both ends tell checkpoints apart)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 3
    return text[:head] + "…" + text[-(width - 1 - head):]


def colorize(values: np.ndarray, cmap: str = HEAT_CMAP, *, vmin: float | None = None,
             vmax: float | None = None) -> np.ndarray:
    """Map ``(H, W)`` values through a matplotlib colormap, min-max scaled unless given.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    import matplotlib

    v = np.asarray(values, dtype=np.float32)
    lo = float(v.min()) if vmin is None else vmin
    hi = float(v.max()) if vmax is None else vmax
    scaled = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.clip(scaled * 255, 0, 255).astype(np.uint8)]


def _grow(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest upsampling of a ``(h, w[, 3])`` grid to ``shape``."""
    fy, fx = shape[0] // grid.shape[0], shape[1] // grid.shape[1]
    if (fy * grid.shape[0], fx * grid.shape[1]) == tuple(shape):
        return np.repeat(np.repeat(grid, fy, axis=0), fx, axis=1)
    from PIL import Image

    return np.asarray(Image.fromarray(grid).resize((shape[1], shape[0]), Image.NEAREST))


def _gray(image: np.ndarray) -> np.ndarray:
    g = np.asarray(image, dtype=np.float32)
    g = g @ np.array([0.299, 0.587, 0.114], dtype=np.float32) if g.ndim == 3 else g
    return np.repeat(g[..., None], 3, axis=-1)


def heat_overlay(image: np.ndarray, attn: np.ndarray, *, alpha: float = 0.65,
                 cmap: str = HEAT_CMAP) -> np.ndarray:
    """An attention heat map over a grey copy of the image.

    Args:
        image: ``(H, W, 3)`` uint8, ``H, W`` multiples of the attention grid.
        attn: ``(h, w)`` attention over patches (min-max scaled for display).
        alpha: weight of the heat map.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    heat = _grow(colorize(attn, cmap), image.shape[:2]).astype(np.float32)
    out = (1 - alpha) * _gray(image) + alpha * heat
    return np.clip(out, 0, 255).astype(np.uint8)


def mask_overlay(image: np.ndarray, mask: np.ndarray, *, color: Sequence[int] = MASK_COLOR,
                 dim: float = 0.3, tint: float = 0.35) -> np.ndarray:
    """The image with the masked region tinted and outlined, the rest dimmed.

    Args:
        image: ``(H, W, 3)`` uint8.
        mask: ``(H, W)`` bool.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    img = np.asarray(image, dtype=np.float32)
    m = np.asarray(mask, dtype=bool)
    c = np.asarray(color, dtype=np.float32)
    out = np.where(m[..., None], (1 - tint) * img + tint * c, dim * img)
    out[_edges(m)] = c
    return np.clip(out, 0, 255).astype(np.uint8)


def _edges(m: np.ndarray) -> np.ndarray:
    """Pixels of ``m`` with a 4-neighbour outside ``m`` (the mask's inner outline)."""
    p = np.pad(m, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return m & ~inner


def display_size(shape: tuple[int, ...], *, min_side: int = 112,
                 max_side: int = 192) -> tuple[int, int]:
    """Tile size for an ``(H, W)`` image: tiny images grow by an integer factor (crisp pixels),
    large ones shrink so the longer side is ``max_side``."""
    h, w = int(shape[0]), int(shape[1])
    if max(h, w) < min_side:
        f = -(-min_side // max(h, w))
        return h * f, w * f
    if max(h, w) > max_side:
        s = max_side / max(h, w)
        return max(1, round(h * s)), max(1, round(w * s))
    return h, w


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 to ``size = (h, w)``: nearest when growing by an integer factor, area
    averaging when shrinking."""
    h, w = image.shape[:2]
    if (h, w) == tuple(size):
        return image
    if size[0] % h == 0 and size[1] % w == 0 and size[0] >= h:
        return _grow(image, size)
    from PIL import Image

    method = Image.BOX if size[0] < h else Image.BICUBIC
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]),
                                                                          method))


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool to ``size = (h, w)``, nearest."""
    if mask.shape == tuple(size):
        return mask
    return _grow(mask.astype(np.uint8) * 255, size) > 127


def fit_tile(image: np.ndarray, *, min_side: int = 112, max_side: int = 192) -> np.ndarray:
    """An image resized for display (see :func:`display_size`)."""
    return resize_image(image, display_size(image.shape, min_side=min_side, max_side=max_side))


def tile_grid(tiles: Sequence[Sequence[np.ndarray | None]], *, tile: int = 96, gap: int = 4,
              background: int = 255) -> np.ndarray:
    """Lay ``rows x cols`` RGB tiles out on one canvas, each fitted into a ``tile`` square.

    Returns:
        ``(rows·(tile+gap), cols·(tile+gap), 3)`` uint8; ``None`` entries stay blank.
    """
    from PIL import Image

    rows, cols = len(tiles), max((len(r) for r in tiles), default=0)
    step = tile + gap
    canvas = np.full((rows * step, cols * step, 3), background, dtype=np.uint8)
    for r, row in enumerate(tiles):
        for c, t in enumerate(row):
            if t is None:
                continue
            h, w = t.shape[:2]
            s = tile / max(h, w)
            size = (max(1, round(w * s)), max(1, round(h * s)))
            method = Image.NEAREST if s >= 1 else Image.BOX
            im = np.asarray(Image.fromarray(np.ascontiguousarray(t)).resize(size, method))
            y, x = r * step + (tile - im.shape[0]) // 2, c * step + (tile - im.shape[1]) // 2
            canvas[y:y + im.shape[0], x:x + im.shape[1]] = im[..., :3]
    return canvas


def plot_tile_grid(tiles: Sequence[Sequence[np.ndarray | None]], *, row_labels: Sequence[str],
                   col_labels: Sequence[str], title: str = "", tile: int = 96,
                   ax: Any = None) -> Any:
    """A labelled grid of image tiles (one ``imshow`` of a canvas, so it draws fast).

    Args:
        tiles: ``rows x cols`` RGB arrays (or ``None``).
        row_labels, col_labels: text left of each row and above each column.
    """
    gap = 4
    canvas = tile_grid(tiles, tile=tile, gap=gap)
    h, w = canvas.shape[:2]
    if ax is None:  # 1 canvas pixel = 1 figure pixel at 100 dpi; fixed margins, no layout engine
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        left, top, pad = 2.0, 0.55 if title else 0.35, 0.05
        W, H = w / 100 + left + pad, h / 100 + top + pad
        fig = Figure(figsize=(W, H), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((left / W, pad / H, w / 100 / W, h / 100 / H))
    else:
        fig = ax.figure
    ax.imshow(canvas, interpolation="nearest")
    step = tile + gap
    ax.set_xticks([c * step + tile / 2 for c in range(len(col_labels))], list(col_labels),
                  fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([r * step + tile / 2 for r in range(len(row_labels))], list(row_labels),
                  fontsize=8)
    ax.tick_params(length=0)
    for s in ax.spines.values():
        s.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def plot_jaccard(labels: Sequence[str], head_means: Sequence[np.ndarray],
                 mean_heads: Sequence[float], *, ax: Any = None) -> Any:
    """Grouped bars: per-head mean Jaccard and the mean-of-heads Jaccard, per checkpoint.

    Args:
        labels: ``C`` checkpoint names.
        head_means: ``C`` arrays ``(heads,)`` of per-head mean Jaccard.
        mean_heads: ``C`` mean-of-heads Jaccard values.
    """
    n = len(labels)
    fig, ax = _new_ax(ax, (max(5.5, 1.5 + 0.35 * n * (1 + max(len(h) for h in head_means))),
                           3.0 + 0.2 * n))
    width = 0.8 / max(1, n)
    max_heads = max((len(h) for h in head_means), default=0)
    xs = np.arange(max_heads + 1)
    for i, (lab, hm, mh) in enumerate(zip(labels, head_means, mean_heads, strict=True)):
        vals = np.full(max_heads + 1, np.nan)
        vals[:len(hm)] = hm
        vals[-1] = mh
        short = _middle_ellipsis(lab, 48)
        ax.bar(xs + (i - (n - 1) / 2) * width, vals, width, label=short)
    ax.set_xticks(xs, [f"h{h}" for h in range(max_heads)] + ["mean"])
    ax.set_ylabel("Jaccard (mean over images)")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), frameon=False)
    return fig


def plot_lines(x: Mapping[str, np.ndarray], y: Mapping[str, np.ndarray], *, xlabel: str = "",
               ylabel: str = "", title: str = "", logx: bool = False, ax: Any = None) -> Any:
    """One line per key of ``y`` (``x[key]`` the matching abscissae); NaNs are skipped.

    With ``logx`` and few distinct abscissae (k-NN's k), the ticks are those values."""
    fig, ax = _new_ax(ax, (5.6, 3.0 + (0.18 * len(y) if len(y) > 1 else 0)))
    for key, yy in y.items():
        xx = np.asarray(x[key], dtype=float)
        yy = np.asarray(yy, dtype=float)
        ok = np.isfinite(xx) & np.isfinite(yy)
        ax.plot(xx[ok], yy[ok], marker="o" if ok.sum() <= 30 else None, ms=3,
                label=_middle_ellipsis(key, 60))
    if logx:
        ax.set_xscale("log")
        ticks = np.unique(np.concatenate([np.asarray(v, dtype=float) for v in x.values()]))
        ticks = ticks[np.isfinite(ticks) & (ticks > 0)]
        if 0 < len(ticks) <= 8:
            from matplotlib.ticker import NullFormatter

            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if len(y) > 1:
        ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return fig


def plot_bars(categories: Sequence[str], values: Mapping[str, Sequence[float]], *,
              xlabel: str = "", title: str = "",
              errors: Mapping[str, Sequence[float]] | None = None, ax: Any = None) -> Any:
    """Horizontal grouped bars (long names stay readable): one group per category, one bar per
    key of ``values``; the value is written at the end of each bar. ``errors`` (same keys, a
    std per bar, NaN for none) draws error bars and writes ``value ± std``."""
    n, k = len(categories), len(values)
    fig, ax = _new_ax(ax, (5.6 + (1.0 if k > 1 else 0.0), 0.9 + 0.3 * n * max(1, k) ** 0.7))
    height = 0.8 / max(1, k)
    ys = np.arange(n)
    for i, (key, vals) in enumerate(values.items()):
        v = np.asarray(vals, dtype=float)
        err = np.asarray((errors or {}).get(key, np.full(n, np.nan)), dtype=float)
        has_err = np.isfinite(err)
        bars = ax.barh(ys + (i - (k - 1) / 2) * height, v, height, label=key,
                       xerr=np.where(has_err, err, 0.0) if has_err.any() else None,
                       error_kw={"elinewidth": 1, "capsize": 3, "ecolor": "#333"})
        ax.bar_label(bars, labels=[(f"{x:.3g} ± {e:.2g}" if np.isfinite(e) else f"{x:.3g}")
                                   if np.isfinite(x) else "" for x, e in zip(v, err, strict=True)],
                     fontsize=7, padding=2)
    ax.set_yticks(ys, [_middle_ellipsis(c, 44) for c in categories], fontsize=8)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    if k > 1:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def plot_confusion_matrix(confusion: np.ndarray, class_names: Sequence[str] = (), *,
                          normalize: bool = True, title: str = "", ax: Any = None) -> Any:
    """A confusion matrix as an image: rows the true class, columns the prediction (the layout
    of :func:`dinoeval.eval.knn.confusion_matrix` and scikit-learn's ``ConfusionMatrixDisplay``).

    Args:
        confusion: ``(C, C)`` counts.
        class_names: ``C`` tick labels (default ``0..C-1``).
        normalize: show each row as fractions of its true class (recall on the diagonal);
            a class absent from the test set stays blank.
    """
    cm = np.asarray(confusion, dtype=float)
    c = cm.shape[0]
    names = [str(x) for x in class_names] or [str(i) for i in range(c)]
    if normalize:
        with np.errstate(invalid="ignore", divide="ignore"):
            cm = cm / cm.sum(axis=1, keepdims=True)
    side = min(9.0, 2.2 + 0.42 * c)
    fig, ax = _new_ax(ax, (side + 0.9, side))
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03,
                 label="fraction of the true class" if normalize else "count")
    if c <= 20:
        hi = np.nanmax(cm) if np.isfinite(cm).any() else 1.0
        for i in range(c):
            for j in range(c):
                v = cm[i, j]
                if np.isfinite(v) and (v > 0 or not normalize):
                    ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center",
                            va="center", fontsize=7 if c <= 12 else 5.5,
                            color="white" if v > hi / 2 else "#1d232b")
    ticks = np.arange(c) if c <= 40 else np.arange(0, c, max(1, c // 20))
    ax.set_xticks(ticks, [_middle_ellipsis(names[t], 14) for t in ticks], rotation=45,
                  ha="right", fontsize=7)
    ax.set_yticks(ticks, [_middle_ellipsis(names[t], 14) for t in ticks], fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if title:
        ax.set_title(_middle_ellipsis(title, 60), fontsize=10)
    return fig


def plot_spectrum(singular_values: Mapping[str, np.ndarray],
                  effective_rank: Mapping[str, float] | None = None, *, title: str = "",
                  ax: Any = None) -> Any:
    """The singular-value spectrum behind RankMe, one line per backbone, log scale.

    Each spectrum is drawn as ``p_k = σ_k / Σ σ`` (the distribution whose entropy RankMe
    exponentiates; Garrido et al., 2023) against its rank ``k``; a dashed line of the same colour
    marks the effective rank.

    Args:
        singular_values: label -> ``(K,)`` singular values (any order; sorted descending).
        effective_rank: label -> RankMe, marked on the rank axis.
    """
    fig, ax = _new_ax(ax, (5.8, 3.3 + (0.18 * len(singular_values) if len(singular_values) > 1
                                       else 0)))
    for key, sv in singular_values.items():
        s = np.sort(np.asarray(sv, dtype=float))[::-1]
        total = s.sum()
        if total <= 0:
            continue
        p = s / total
        ok = p > 0
        rank = effective_rank.get(key) if effective_rank else None
        lab = _middle_ellipsis(key, 48) + (f" (RankMe {rank:.1f})" if rank is not None else "")
        (line,) = ax.plot(np.arange(1, len(p) + 1)[ok], p[ok], lw=1.5, label=lab)
        if rank is not None:
            ax.axvline(rank, color=line.get_color(), ls="--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rank k of the singular value")
    ax.set_ylabel("σ_k / Σ σ")
    ax.set_title(title or "Singular-value spectrum (dashed: RankMe effective rank)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7.5, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    return fig


def plot_embedding(xy: np.ndarray, labels: np.ndarray, class_names: Sequence[str] = (), *,
                   title: str = "", ax: Any = None) -> Any:
    """A 2-D map of samples (t-SNE/UMAP coordinates) coloured by class.

    Args:
        xy: ``(N, 2)`` coordinates.
        labels: ``(N,)`` integer classes.
        class_names: names for the legend (default the class numbers).
    """
    xy, labels = np.asarray(xy, dtype=float), np.asarray(labels)
    classes = np.unique(labels)
    names = list(class_names)
    fig, ax = _new_ax(ax, (5.4 + (1.6 if len(classes) <= 20 else 0), 4.6))
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else
                                "tab20" if len(classes) <= 20 else "turbo"]
    for i, c in enumerate(classes):
        m = labels == c
        color = cmap(i % cmap.N) if len(classes) <= 20 else cmap(i / max(1, len(classes) - 1))
        name = names[int(c)] if 0 <= int(c) < len(names) else str(c)
        ax.scatter(xy[m, 0], xy[m, 1], s=6, color=color, alpha=0.75, lw=0,
                   label=_middle_ellipsis(name, 20))
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(_middle_ellipsis(title, 60), fontsize=10)
    if len(classes) <= 20:
        ax.legend(fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0),
                  markerscale=2)
    return fig


def figure_bytes(fig: Any, fmt: str = "png", *, dpi: int = 150) -> bytes:
    """A figure as ``png`` or ``pdf`` bytes (for ``report --figures DIR``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def figure_png(fig: Any, *, dpi: int = 100, compress_level: int = 6) -> bytes:
    """A matplotlib figure as PNG bytes (``compress_level`` 1 is fastest)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, pil_kwargs={"compress_level": compress_level})
    return buf.getvalue()
