"""The attention page: per image, the original and, for each checkpoint, the per-head (and
mean-of-heads) attention heat maps and thresholded masks, captioned with checkpoint, head and
Jaccard; a Jaccard summary table and chart; the same figures as PNG files beside it."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.report import figures as F
from dinoeval.report.html import fmt, img_tag, now_utc, page, png_data_uri, write_page

if TYPE_CHECKING:
    from dinoeval.pipeline.attention import AttentionRun

_CARD_PX, _CARD_GAP = 118, 8  # attention cards: minimum width of a square image's, and gap


def _card_px(shape: tuple[int, ...]) -> int:
    """Card width for an ``(H, W)`` image: wider for wide images, narrower for tall ones, so the
    tiles keep a readable size whatever the aspect ratio."""
    aspect = shape[1] / shape[0]
    return int(np.clip(round(_CARD_PX * aspect ** 0.5), 90, 240))


def write_attention_report(runs: Sequence[AttentionRun], originals: Sequence[np.ndarray],
                           out_dir: str | Path, *, captions: Sequence[str] | None = None,
                           data: str = "", png_figures: bool = True) -> Path:
    """Write ``out_dir/index.html`` (self-contained) and ``out_dir/figures/*.png``.

    Args:
        runs: one :class:`~dinoeval.pipeline.attention.AttentionRun` per checkpoint, all over
            the same images in the same order; the Jaccard summary covers all of them.
        originals: the images as loaded (before resizing/cropping) of the first
            ``len(originals)`` images of the runs: those are drawn.
        captions: a line per drawn image (e.g. its index and label).
        data: where the images came from, for the header.
        png_figures: also write one PNG per drawn image and the Jaccard chart under ``figures/``.

    Returns:
        The HTML file's path.
    """
    if not runs:
        raise DinoevalError("no checkpoints to report; pass --ckpt at least once")
    n = len(runs[0].masks)
    shown = len(originals)
    for r in runs:
        if len(r.masks) != n:
            raise DinoevalError(f"{r.label}: {len(r.masks)} images, expected {n} as in "
                                f"{runs[0].label}")
    if shown > n:
        raise DinoevalError(f"{shown} images to draw but the runs hold {n}")
    captions = list(captions) if captions is not None else [f"image {i}" for i in range(shown)]
    out_dir = Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    labels = _unique_labels([r.label for r in runs])

    body = [_attention_settings(runs, labels, data)]
    scored = [r for r in runs if r.jaccard is not None]
    if scored:
        body.append(_jaccard_section(runs, labels, fig_dir if png_figures else None))
    for i in range(shown):
        tiles = [_image_tiles(r, i) for r in runs]
        body.append(_image_section(i, captions[i], originals[i], runs, labels, tiles))
        if png_figures:
            _write_image_png(fig_dir / f"image_{i:03d}.png", originals[i], runs, labels, tiles,
                             captions[i])
    title = "DINO attention maps"
    count = (f"{n} image{'s' * (n > 1)}" if shown == n else
             f"{n} images scored, the first {shown} drawn")
    sub = [f"{len(runs)} checkpoint{'s' * (len(runs) > 1)} · {count}"
           f"{' · ' + html.escape(data) if data else ''} · generated {now_utc()}"]
    path = out_dir / "index.html"
    return write_page(path, page(title, sub, body))


def _unique_labels(labels: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for lab in labels:
        seen[lab] = seen.get(lab, 0) + 1
        out.append(lab if seen[lab] == 1 else f"{lab} #{seen[lab]}")
    return out


def _attention_settings(runs: Sequence[AttentionRun], labels: Sequence[str], data: str) -> str:
    rows = "".join(
        f"<tr><td class=name>{html.escape(lab)}</td><td class=name>{html.escape(r.arch)}</td>"
        f"<td class=name><code>{html.escape(r.content_hash)}</code></td><td>{r.num_heads}</td>"
        f"<td>{r.block}</td><td>{r.mass:g}</td><td class=wrap>{html.escape(r.prep)}</td></tr>"
        for lab, r in zip(labels, runs, strict=True))
    swatch = ("background:linear-gradient(90deg," + ",".join(
        "rgb({},{},{})".format(*c) for c in F.colorize(np.linspace(0, 1, 8)[None])[0]) + ")")
    mask_rgb = "rgb({},{},{})".format(*F.MASK_COLOR)
    data_line = f"<p class=muted>Data: {html.escape(data)}</p>" if data else ""
    jaccard_note = ("<span>J = Jaccard (IoU) of the mask with the ground-truth foreground</span>"
                    if any(r.jaccard is not None for r in runs) else
                    "<span>no ground truth: maps are drawn, not scored</span>")
    return (
        "<section><h2>Settings</h2><div class=scroll><table class=tbl><tr>"
        "<th class=name>checkpoint</th><th class=name>arch</th><th class=name>hash</th>"
        "<th>heads</th><th>block</th><th>mass kept</th><th class=name>preprocessing</th></tr>"
        f"{rows}</table></div><div class=legend>"
        f"<span><span class=swatch style=\"{swatch}\"></span>CLS→patch attention (per map, "
        "low → high)</span>"
        f"<span><span class=swatch style=\"background:{mask_rgb};width:24px\"></span>mask: the "
        "fewest patches holding the kept attention mass (outlined; the rest dimmed)</span>"
        f"{jaccard_note}</div>{data_line}</section>")


def _jaccard_section(runs: Sequence[AttentionRun], labels: Sequence[str],
                     fig_dir: Path | None) -> str:
    max_heads = max(r.num_heads for r in runs)
    cols = [r.jaccard.head_means.tolist() + [None] * (max_heads - r.num_heads)
            if r.jaccard is not None else [None] * max_heads for r in runs]
    best_per_col = [max((c[h] for c in cols if c[h] is not None), default=None)
                    for h in range(max_heads)]
    means = [float(r.jaccard.mean_heads.mean()) if r.jaccard is not None else None for r in runs]
    best_mean = max((m for m in means if m is not None), default=None)
    head_th = "".join(f"<th>head {h}</th>" for h in range(max_heads))
    rows = []
    for lab, r, c, m in zip(labels, runs, cols, means, strict=True):
        cells = "".join(
            f"<td{' class=best' if v is not None and v == best_per_col[h] and len(runs) > 1 else ''}"
            f">{fmt(v)}</td>" for h, v in enumerate(c))
        best = (f"{fmt(float(r.jaccard.head_means[r.jaccard.best_head]))} "
                f"(h{r.jaccard.best_head})" if r.jaccard is not None else "–")
        mcls = " class=best" if m is not None and m == best_mean and len(runs) > 1 else ""
        n = r.jaccard.per_head.shape[0] if r.jaccard is not None else 0
        rows.append(f"<tr><td class=name>{html.escape(lab)}</td><td class=name>"
                    f"{html.escape(r.arch)}</td>{cells}<td>{best}</td><td{mcls}>{fmt(m)}</td>"
                    f"<td>{n}</td></tr>")
    scored = [(lab, r) for lab, r in zip(labels, runs, strict=True) if r.jaccard is not None]
    fig = F.plot_jaccard([lab for lab, _ in scored], [r.jaccard.head_means for _, r in scored],
                         [float(r.jaccard.mean_heads.mean()) for _, r in scored])
    png = F.figure_png(fig)
    if fig_dir is not None:
        (fig_dir / "jaccard.png").write_bytes(png)
    return ("<section id=jaccard><h2>Jaccard summary</h2><p class=muted>Mean over images of the "
            "Jaccard index between each mask and the ground truth; <i>best</i> is the head with "
            "the highest mean, <i>mean of heads</i> thresholds the head-averaged attention.</p>"
            "<div class=scroll><table class=tbl><tr><th class=name>checkpoint</th>"
            f"<th class=name>arch</th>{head_th}<th>best head</th><th>mean of heads</th>"
            f"<th>images</th></tr>{''.join(rows)}</table></div>"
            f"{img_tag(png_data_uri(png), 'Jaccard per head and checkpoint', 'plot')}</section>")


def _image_tiles(run: AttentionRun, i: int) -> list[tuple[str, np.ndarray, np.ndarray,
                                                          float | None]]:
    """``(name, heat, mask, J)`` per map at display size: mean of heads first, then each head."""
    m = run.masks[i]
    size = F.display_size(run.images[i].shape)
    img = F.resize_image(run.images[i], size)
    j = run.jaccard
    tiles = [("mean", F.heat_overlay(img, m.attn.mean(axis=0)),
              F.mask_overlay(img, F.resize_mask(m.mean_mask, size)),
              float(j.mean_heads[i]) if j is not None else None)]
    for h in range(m.attn.shape[0]):
        tiles.append((f"head {h}", F.heat_overlay(img, m.attn[h]),
                      F.mask_overlay(img, F.resize_mask(m.head_masks[h], size)),
                      float(j.per_head[i, h]) if j is not None else None))
    return tiles


def _image_section(i: int, caption: str, original: np.ndarray, runs: Sequence[AttentionRun],
                   labels: Sequence[str], tiles: Sequence[Sequence[tuple]]) -> str:
    orig = img_tag(png_data_uri(F.fit_tile(original)), f"image {i}")
    parts = [f"<section id=img{i}><div class=image-head><div class=original>{orig}</div><div>"
             f"<h3>{html.escape(caption)}</h3><p class=muted>original {original.shape[1]}×"
             f"{original.shape[0]} px (width×height)</p>"]
    gt = [r.targets[i] for r in runs if r.targets[i] is not None]
    if gt:
        r0 = next(r for r in runs if r.targets[i] is not None)
        size = F.display_size(r0.images[i].shape)
        gt_tile = F.mask_overlay(F.resize_image(r0.images[i], size), F.resize_mask(gt[0], size))
        parts.append(img_tag(png_data_uri(gt_tile),
                          "ground truth", style="width:96px;image-rendering:pixelated"))
        parts.append("<p class=muted>ground-truth foreground</p>")
    parts.append("</div></div><div class=ckpts>")
    for lab, r, ts in zip(labels, runs, tiles, strict=True):
        score = (f" · J(mean of heads) <span class=score>{r.jaccard.mean_heads[i]:.3f}</span>"
                 if r.jaccard is not None else "")
        # As wide as its cards need, so checkpoints with few heads sit side by side.
        card = _card_px(r.images[i].shape)
        width = len(ts) * (card + _CARD_GAP) - _CARD_GAP
        parts.append(f"<div class=ckpt style=\"width:{width}px;--card:{card}px\">"
                     f"<div class=ckpt-name>{html.escape(lab)} "
                     f"<span>{html.escape(r.arch)} · block {r.block}{score}</span></div>"
                     "<div class=tiles>")
        for name, heat, mask, j in ts:
            alt = f"{lab} {name}"
            js = f" · J <span class=score>{j:.3f}</span>" if j is not None else ""
            cls = "card mean" if name == "mean" else "card"
            parts.append(f"<figure class=\"{cls}\">{img_tag(png_data_uri(heat), alt)}"
                         f"{img_tag(png_data_uri(mask), alt + ' mask')}"
                         f"<figcaption><b>{html.escape(name)}</b>{js}<span class=who "
                         f"title=\"{html.escape(lab)}\">{html.escape(lab)}</span>"
                         "</figcaption></figure>")
        parts.append("</div></div>")
    parts.append("</div></section>")
    return "".join(parts)


def _write_image_png(path: Path, original: np.ndarray, runs: Sequence[AttentionRun],
                     labels: Sequence[str], tiles: Sequence[Sequence[tuple]], caption: str) -> None:
    max_maps = max(len(ts) for ts in tiles)
    grid: list[list[np.ndarray | None]] = []
    row_labels = []
    for k, (lab, ts) in enumerate(zip(labels, tiles, strict=True)):
        lead = original if k == 0 else None
        grid.append([lead] + [t[1] for t in ts] + [None] * (max_maps - len(ts)))
        grid.append([None] + [t[2] for t in ts] + [None] * (max_maps - len(ts)))
        short = lab if len(lab) <= 26 else "…" + lab[-25:]
        row_labels += [f"{short}\nheat", f"{short}\nmask"]
    names = [t[0] for t in max(tiles, key=len)]
    col_labels = ["image", *names]
    fig = F.plot_tile_grid(grid, row_labels=row_labels, col_labels=col_labels, title=caption)
    path.write_bytes(F.figure_png(fig, compress_level=1))


# ---------------------------------------------------------------------------- results report
