"""Self-contained HTML reports: every image a base64 PNG data URI, CSS inline, nothing fetched.

* :func:`write_attention_report`: per image, the original and, for each checkpoint, the per-head
  (and mean-of-heads) attention heat maps and thresholded masks, captioned with checkpoint, head
  and Jaccard; a Jaccard summary table and chart; the same figures as PNG files beside it.
* :func:`write_results_report`: a stored results table as pivot tables and plots (k-NN by k,
  linear, collapse statistics, Jaccard, anything else), plus pretraining curves from a log CSV.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report import figures as F

if TYPE_CHECKING:
    from dinoeval.pipeline.attention import AttentionRun

_CARD_PX, _CARD_GAP = 118, 8  # attention cards: minimum width of a square image's, and gap


def _card_px(shape: tuple[int, ...]) -> int:
    """Card width for an ``(H, W)`` image: wider for wide images, narrower for tall ones, so the
    tiles keep a readable size whatever the aspect ratio."""
    aspect = shape[1] / shape[0]
    return int(np.clip(round(_CARD_PX * aspect ** 0.5), 90, 240))

CSS = """
:root { --fg:#1d232b; --muted:#5f6b7a; --line:#e2e6eb; --bg:#f6f7f9; --card:#fff;
        --accent:#0a7bbd; --good:#e7f6ec; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#14202e; color:#fff; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:21px; font-weight:600; }
header p { margin:2px 0; color:#c5d0dc; font-size:13px; }
main { max-width:1400px; margin:0 auto; padding:16px 24px 48px; }
section { background:var(--card); border:1px solid var(--line); border-radius:8px;
          padding:14px 18px; margin:16px 0; overflow:hidden; }
h2 { font-size:17px; margin:2px 0 10px; }
h3 { font-size:15px; margin:0 0 8px; }
.muted { color:var(--muted); font-size:12.5px; }
.scroll { overflow-x:auto; }
table.tbl { border-collapse:collapse; font-size:12.5px; margin:6px 0 10px; }
table.tbl th, table.tbl td { border-bottom:1px solid var(--line); padding:4px 9px;
                             text-align:right; white-space:nowrap; }
table.tbl th { background:#f0f3f6; font-weight:600; }
table.tbl th[colspan] { text-align:center; }
table.tbl td.name, table.tbl th.name { text-align:left; }
table.tbl td.name { white-space:normal; overflow-wrap:anywhere; max-width:420px;
                    min-width:12ch; }
table.tbl td.name:first-child { min-width:26ch; }
table.tbl td.best { background:var(--good); font-weight:600; }
img.plot { max-width:100%; height:auto; display:block; margin:6px 0; }
.plots { display:flex; flex-wrap:wrap; gap:10px; }
.plots img.plot { max-width:min(100%, 640px); }
.image-head { display:flex; gap:16px; align-items:flex-start; margin-bottom:8px; }
.original { width:150px; flex:none; }
.original img { width:150px; height:auto; image-rendering:pixelated; border-radius:4px;
                border:1px solid var(--line); }
.ckpts { display:flex; flex-wrap:wrap; column-gap:28px; }
.ckpt { border-top:1px solid var(--line); padding:8px 0 4px; max-width:100%; flex:0 1 auto; }
.ckpt-name { font-weight:600; font-size:13px; margin-bottom:6px; overflow-wrap:anywhere; }
.ckpt-name span { font-weight:400; color:var(--muted); }
.tiles { display:grid; gap:8px;
         grid-template-columns:repeat(auto-fill, minmax(min(var(--card, 118px), 100%), 1fr)); }
@media (max-width: 700px) { .tiles { --card:96px; } }
figure.card { margin:0; background:#fafbfc; border:1px solid var(--line); border-radius:6px;
              padding:4px; min-width:0; }
figure.card.mean { border-color:var(--accent); }
figure.card img { width:100%; height:auto; display:block; image-rendering:pixelated;
                  border-radius:3px; }
figure.card img + img { margin-top:3px; }
figure.card figcaption { font-size:11.5px; line-height:1.3; margin-top:3px;
                         overflow-wrap:anywhere; }
figure.card figcaption b { font-weight:600; }
figure.card figcaption .who { display:block; color:var(--muted); white-space:nowrap;
                              overflow:hidden; text-overflow:ellipsis; }
table.tbl td.wrap { white-space:normal; text-align:left; min-width:260px; }
.score { color:var(--accent); font-weight:600; }
.legend { display:flex; gap:18px; flex-wrap:wrap; font-size:12.5px; color:var(--muted); }
.swatch { display:inline-block; width:90px; height:10px; vertical-align:middle;
          border-radius:2px; margin-right:6px; }
nav.toc a { margin-right:12px; color:var(--accent); text-decoration:none; }
"""


def png_data_uri(image: np.ndarray | bytes) -> str:
    """A ``data:image/png;base64,...`` URI of PNG bytes or an ``(H, W[, 3])`` uint8 array."""
    if isinstance(image, bytes):
        data = image
    else:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(uri: str, alt: str, cls: str = "", style: str = "") -> str:
    c = f' class="{cls}"' if cls else ""
    st = f' style="{style}"' if style else ""
    return f'<img{c}{st} src="{uri}" alt="{html.escape(alt)}">'


def _page(title: str, subtitle: Sequence[str], body: Sequence[str]) -> str:
    sub = "".join(f"<p>{s}</p>" for s in subtitle)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}</style></head><body><header><h1>{html.escape(title)}</h1>{sub}"
            f"</header><main>{''.join(body)}</main></body></html>\n")


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float | np.floating) else html.escape(str(v))


# --------------------------------------------------------------------------- attention report


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
           f"{' · ' + html.escape(data) if data else ''} · generated {_now()}"]
    path = out_dir / "index.html"
    path.write_text(_page(title, sub, body), encoding="utf-8")
    return path


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
            f">{_fmt(v)}</td>" for h, v in enumerate(c))
        best = (f"{_fmt(float(r.jaccard.head_means[r.jaccard.best_head]))} "
                f"(h{r.jaccard.best_head})" if r.jaccard is not None else "–")
        mcls = " class=best" if m is not None and m == best_mean and len(runs) > 1 else ""
        n = r.jaccard.per_head.shape[0] if r.jaccard is not None else 0
        rows.append(f"<tr><td class=name>{html.escape(lab)}</td><td class=name>"
                    f"{html.escape(r.arch)}</td>{cells}<td>{best}</td><td{mcls}>{_fmt(m)}</td>"
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
            f"{_img(png_data_uri(png), 'Jaccard per head and checkpoint', 'plot')}</section>")


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
    orig = _img(png_data_uri(F.fit_tile(original)), f"image {i}")
    parts = [f"<section id=img{i}><div class=image-head><div class=original>{orig}</div><div>"
             f"<h3>{html.escape(caption)}</h3><p class=muted>original {original.shape[1]}×"
             f"{original.shape[0]} px (width×height)</p>"]
    gt = [r.targets[i] for r in runs if r.targets[i] is not None]
    if gt:
        r0 = next(r for r in runs if r.targets[i] is not None)
        size = F.display_size(r0.images[i].shape)
        gt_tile = F.mask_overlay(F.resize_image(r0.images[i], size), F.resize_mask(gt[0], size))
        parts.append(_img(png_data_uri(gt_tile),
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
            parts.append(f"<figure class=\"{cls}\">{_img(png_data_uri(heat), alt)}"
                         f"{_img(png_data_uri(mask), alt + ' mask')}"
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

_EVAL_TITLES = {"knn": "k-NN classification", "linear": "Linear probe",
                "collapse": "Collapse statistics", "attention": "Attention-mask Jaccard"}
_ROWS = ("backbone", "arch", "feature")
_NOT_SCORES = {"best_head"}  # indices, not scores: neither plotted nor highlighted


def write_results_report(df: pd.DataFrame, out: Path, *, pretrain_log: Path | None = None,
                         figures: dict[str, Any] | None = None) -> Path:
    """Render a stored results table (and optionally a pretraining log) as one HTML page.

    Args:
        df: a results table with :data:`dinoeval.results.COLUMNS` (e.g. from ``read_results``).
        out: the HTML file to write (its folder is created).
        pretrain_log: a pretrain run folder (its ``log.csv`` per step and ``epochs.csv`` per
            epoch), or one CSV (or JSON-lines) log (a ``log.csv`` brings its sibling
            ``epochs.csv``). Columns are matched by name: a step/epoch axis and any of loss,
            teacher entropy, KL and online k-NN; missing ones are said, not fatal.
        figures: ``{name: matplotlib figure}`` drawn in a "Figures" section (confusion
            matrices, the RankMe spectrum, 2-D maps: see :mod:`dinoeval.report.figure_set`).

    Returns:
        ``out``.
    """
    from dinoeval.results import COLUMNS

    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DinoevalError(f"not a dinoeval results table (missing columns {', '.join(missing)})")
    out = Path(out)
    body: list[str] = []
    evals = list(df["eval"].astype(str).unique())
    order = [e for e in _EVAL_TITLES if e in evals] + sorted(e for e in evals
                                                             if e not in _EVAL_TITLES)
    toc = [f"<a href=\"#eval-{_slug(e)}\">{html.escape(_EVAL_TITLES.get(e, e))}</a>"
           for e in order]
    if figures:
        toc.append("<a href=\"#figures\">Figures</a>")
    if pretrain_log is not None:
        toc.append("<a href=\"#pretrain\">Pretraining</a>")
    if toc:
        body.append(f"<nav class=toc>{''.join(toc)}</nav>")
    body.append(_backbones_section(df))
    for e in order:
        body.append(_eval_section(e, df[df["eval"].astype(str) == e]))
    if figures:
        from dinoeval.report.figure_set import figures_html

        body.append(figures_html(figures))
    if pretrain_log is not None:
        body.append(_pretrain_section(Path(pretrain_log)))
    if df.empty:
        body.append("<section><p>The results table is empty.</p></section>")
    versions = ", ".join(sorted(df["version"].astype(str).unique())) or "–"
    sub = [f"{len(df)} rows · {df['backbone'].nunique()} backbones · {len(order)} evaluations · "
           f"dinoeval {html.escape(versions)} · generated {_now()}"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_page("dinoeval results", sub, body), encoding="utf-8")
    return out


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-") or "x"


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    """Repeated measurements keep the latest value (as :func:`dinoeval.results.pivot` does)."""
    keys = [c for c in ("backbone", "arch", "feature", "dataset", "split", "eval", "metric",
                        "param") if c in df.columns]
    return df.sort_values("timestamp", kind="stable").drop_duplicates(keys, keep="last")


def _backbones_section(df: pd.DataFrame) -> str:
    if df.empty:
        return ""
    g = (df.assign(ckpt_hash=df["ckpt_hash"].astype(str))
         .groupby(["backbone", "arch", "ckpt_hash"], dropna=False)
         .agg(evaluations=("eval", lambda s: ", ".join(sorted(set(map(str, s))))),
              datasets=("dataset", lambda s: ", ".join(sorted(set(map(str, s))))),
              rows=("value", "size"))
         .reset_index())
    return ("<section id=backbones><h2>Backbones</h2><div class=scroll>"
            f"{_table_html(g.set_index(['backbone', 'arch', 'ckpt_hash']))}</div></section>")


def _param_key(p: str) -> tuple[float, str]:
    m = re.search(r"-?\d+(?:\.\d+)?(?:e-?\d+)?", str(p))
    return (float(m.group()) if m else float("inf"), str(p))


def short_backbone(spec: str) -> str:
    """A table-sized backbone name: a long path keeps its last two parts (``random:`` kept)."""
    prefix, _, rest = spec.rpartition(":") if re.match(r"^[a-z]+:/", spec) else ("", "", spec)
    parts = Path(rest).parts
    if len(parts) <= 2 or len(spec) <= 32:
        return spec
    return f"{prefix + ':' if prefix else ''}…/{'/'.join(parts[-2:])}"


def _shorten_backbones(df: pd.DataFrame) -> pd.DataFrame:
    """Short backbone names, unless two backbones would share one."""
    specs = df["backbone"].astype(str).unique()
    short = {s: short_backbone(s) for s in specs}
    if len(set(short.values())) < len(specs):
        return df
    return df.assign(backbone=df["backbone"].astype(str).map(short))


def _wide(sub: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Pivot: rows ``backbone/arch/feature`` (+ dataset/split when they vary), latest values."""
    sub = _shorten_backbones(_latest(sub))
    rows = list(_ROWS) + [c for c in ("dataset", "split") if sub[c].astype(str).nunique() > 1]
    cols = [c for c in columns if sub[c].astype(str).nunique() > 1] or [columns[0]]
    wide = sub.assign(param=sub["param"].astype(str)).pivot_table(
        index=rows, columns=cols, values="value", aggfunc="last")
    if "param" in cols:
        keys = sorted(wide.columns, key=lambda c: tuple(
            _param_key(v) if n == "param" else (0.0, str(v))
            for n, v in zip(cols, c if isinstance(c, tuple) else (c,), strict=True)))
        wide = wide[keys]
    return wide


def _table_html(table: pd.DataFrame, *, highlight_max: bool = False) -> str:
    """A pivot table as compact HTML: index levels as name columns, grouped column headers,
    and (optionally) the best value of each column highlighted."""
    idx_names = [str(n) if n is not None else "" for n in table.index.names]
    cols = list(table.columns)
    levels = table.columns.nlevels
    col_tuples = [c if isinstance(c, tuple) else (c,) for c in cols]
    head = []
    for lvl in range(levels):
        cells = []
        if lvl == levels - 1:
            cells += [f"<th class=name>{html.escape(n)}</th>" for n in idx_names]
        else:
            cells.append(f"<th colspan={len(idx_names)}></th>")
        j = 0
        while j < len(col_tuples):  # merge equal neighbours of this level (and the ones above)
            k = j
            while k + 1 < len(col_tuples) and col_tuples[k + 1][:lvl + 1] == col_tuples[j][:lvl + 1]:
                k += 1
            span = f" colspan={k - j + 1}" if k > j else ""
            cells.append(f"<th{span}>{html.escape(str(col_tuples[j][lvl]))}</th>")
            j = k + 1
        head.append("<tr>" + "".join(cells) + "</tr>")
    best = table.max(axis=0, numeric_only=True) if highlight_max and len(table) > 1 else None
    body = []
    for key, row in table.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [f"<td class=name>{html.escape(str(v))}</td>" for v in keys]
        for c, v in zip(cols, row, strict=True):
            num = isinstance(v, int | float | np.number) and not isinstance(v, bool)
            is_best = (best is not None and num and np.isfinite(v) and v == best.get(c)
                       and not set(map(str, c if isinstance(c, tuple) else (c,))) & _NOT_SCORES)
            text = (f"{v:.4g}" if num and np.isfinite(v) else "–" if num
                    else html.escape(str(v)))
            cls = " class=best" if is_best else "" if num else " class=name"
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class=tbl>{''.join(head)}{''.join(body)}</table>"


def _series_label(key: Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return " · ".join(str(p) for p in parts if str(p))


def _eval_section(name: str, sub: pd.DataFrame) -> str:
    title = _EVAL_TITLES.get(name, f"Evaluation: {name}")
    head = (f"<section id=\"eval-{_slug(name)}\"><h2>{html.escape(title)}</h2>"
            f"<p class=muted>{len(sub)} rows · datasets: "
            f"{html.escape(', '.join(sorted(sub['dataset'].astype(str).unique())))}</p>")
    try:
        table = _wide(sub, ("metric", "param"))
        higher_better = name in ("knn", "linear", "attention")
        tables = f"<div class=scroll>{_table_html(table, highlight_max=higher_better)}</div>"
    except Exception as err:  # a malformed table still renders the rest of the page
        tables = f"<p class=muted>could not pivot: {html.escape(str(err))}</p>"
    plots = []
    try:
        plots = _eval_plots(name, _latest(sub))
    except Exception as err:
        plots = [f"<p class=muted>could not plot: {html.escape(str(err))}</p>"]
    return head + tables + f"<div class=plots>{''.join(plots)}</div></section>"


_ONE_NUMBER = re.compile(r"^[A-Za-z_]\w*=-?\d+(\.\d+)?(e-?\d+)?$")  # k=20, not lr=1,wd=0


def _eval_plots(name: str, sub: pd.DataFrame) -> list[str]:
    sub = _shorten_backbones(sub[np.isfinite(sub["value"].astype(float))
                                 & ~sub["metric"].astype(str).isin(_NOT_SCORES)])
    if sub.empty:
        return []
    series = ["backbone"] + [c for c in ("feature", "dataset")
                             if sub[c].astype(str).nunique() > 1]
    out = []
    metrics = list(dict.fromkeys(sub["metric"].astype(str)))
    params_numeric = sub["param"].astype(str).map(lambda p: bool(_ONE_NUMBER.match(p)))
    if params_numeric.all() and (name == "knn" or sub["param"].astype(str).nunique() > 2):
        for metric in metrics[:4]:
            m = sub[sub["metric"].astype(str) == metric]
            if m["param"].astype(str).nunique() < 2:
                continue
            xs, ys = {}, {}
            for key, g in m.groupby(series, sort=True):
                g = g.assign(_x=g["param"].astype(str).map(lambda p: _param_key(p)[0]))
                g = g.sort_values("_x")
                lab = _series_label(key)
                xs[lab], ys[lab] = g["_x"].to_numpy(), g["value"].to_numpy()
            xlabel = re.sub(r"[=\d.\-e]+$", "", str(m["param"].iloc[0])) or "param"
            fig = F.plot_lines(xs, ys, xlabel=xlabel, ylabel=metric, title=f"{name}: {metric}",
                               logx=name == "knn")
            out.append(_img(png_data_uri(F.figure_png(fig)), f"{name} {metric}", "plot"))
        if out:
            return out
    # Bars: one small chart per score (metrics have different scales); constants, settings and
    # per-class rows are not bars, a score's *_std rows are its error bars.
    from dinoeval.report.figure_set import _is_score

    for metric in [m for m in metrics if _is_score(m)][:12]:
        m = sub[sub["metric"].astype(str) == metric]
        if m["param"].astype(str).nunique() > 6:  # a grid (lr x wd, ...): the table says it
            continue
        m = _with_std(m.assign(_series=m[series].astype(str).agg(" · ".join, axis=1),
                               param=m["param"].astype(str)),
                      sub[sub["metric"].astype(str) == f"{metric}_std"], series)
        if m["param"].nunique() > 1 and m.groupby("_series")["param"].nunique().max() == 1:
            # One setting per backbone (the one a grid chose): one bar each, setting in the name.
            m = m.assign(_series=m["_series"] + " (" + m["param"] + ")", param="")
        params = sorted(m["param"].unique(), key=_param_key)
        cats = list(dict.fromkeys(m["_series"]))
        values = {p or metric: [_cell(m, c, p, "value") for c in cats] for p in params[:12]}
        errors = {p or metric: [_cell(m, c, p, "_err") for c in cats] for p in params[:12]}
        fig = F.plot_bars(cats, values, xlabel=metric, title=f"{name}: {metric}", errors=errors)
        out.append(_img(png_data_uri(F.figure_png(fig)), f"{name} {metric}", "plot"))
    return out


def _cell(m: pd.DataFrame, series: str, param: str, col: str) -> float:
    hit = m[(m["_series"] == series) & (m["param"] == param)]
    return float(hit[col].iloc[-1]) if len(hit) else np.nan


def _with_std(m: pd.DataFrame, std: pd.DataFrame, series: list[str]) -> pd.DataFrame:
    """``m`` with an ``_err`` column: the matching ``<metric>_std`` row's value (or NaN)."""
    if std.empty:
        return m.assign(_err=np.nan)
    std = std.assign(_series=std[series].astype(str).agg(" · ".join, axis=1),
                     param=std["param"].astype(str))
    err = (std.drop_duplicates(["_series", "param"], keep="last")
           .set_index(["_series", "param"])["value"])
    return m.assign(_err=[err.get((a, b), np.nan) for a, b in zip(m["_series"], m["param"],
                                                                   strict=True)])


# ------------------------------------------------------------------------------- pretrain log

_X_CANDIDATES = ("step", "global_step", "iteration", "iter", "it", "epoch")
_CURVES = (
    ("Loss", re.compile(r"loss")),
    ("Teacher entropy", re.compile(r"entropy")),
    ("KL(teacher ‖ student)", re.compile(r"(^|[^a-z])kl([^a-z]|$)|kl_?div")),
    ("Online k-NN", re.compile(r"knn|k_nn|nn_acc")),
)
_NOT_CURVES = re.compile(r"(^|_)k$|_k_|(^|_)n$")  # settings logged beside a metric (knn_k)
_LOG_NAMES = ("log.csv", "epochs.csv")  # what `pretrain` writes into its run folder


def pretrain_log_files(path: Path) -> list[Path]:
    """The logs to read for ``path``: a run folder's ``log.csv`` (per step) and ``epochs.csv``
    (per epoch, with the online k-NN), or one file plus its sibling of those names."""
    if path.is_dir():
        files = [path / n for n in _LOG_NAMES if (path / n).is_file()]
        if not files:
            raise DinoevalError(f"pretrain run folder {path} has no {' or '.join(_LOG_NAMES)}")
        return files
    if not path.exists():
        raise DinoevalError(f"pretrain log {path} not found; pass the log.csv (or the run "
                            "folder) that pretrain wrote")
    siblings = [path.with_name(n) for n in _LOG_NAMES] if path.name in _LOG_NAMES else []
    return [path] + [p for p in siblings if p != path and p.is_file()]


def read_pretrain_log(path: Path) -> pd.DataFrame:
    """Read one pretraining log (CSV, or JSON lines for ``.jsonl``); numeric columns only."""
    try:
        json_lines = path.suffix in (".jsonl", ".json")
        log = pd.read_json(path, lines=True) if json_lines else pd.read_csv(path)
    except Exception as err:
        raise DinoevalError(f"pretrain log {path} cannot be read: {err}") from err
    log.columns = [str(c).strip() for c in log.columns]
    return log.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="all")


def check_pretrain_log(path: Path) -> Path:
    """``path`` when it holds a pretraining log with at least one curve (loss, entropy, KL,
    k-NN, ...), else an error: a wrong file would otherwise give an empty section."""
    for f in pretrain_log_files(path):
        log = read_pretrain_log(f)
        if any(p.search(str(c).lower()) and not _NOT_CURVES.search(str(c).lower())
               for c in log.columns for _, p in _CURVES):
            return path
    raise DinoevalError(f"pretrain log {path} has no loss, entropy, KL or k-NN column; pass the "
                        "log.csv (or the run folder) that pretrain wrote")


def _x_column(log: pd.DataFrame) -> str | None:
    lower = {c.lower(): c for c in log.columns}
    return next((lower[c] for c in _X_CANDIDATES if c in lower), None)


def _pretrain_section(path: Path) -> str:
    logs = [(f, read_pretrain_log(f)) for f in pretrain_log_files(path)]
    desc = " · ".join(f"{html.escape(f.name)}: {len(log)} rows ({html.escape(', '.join(log.columns))})"
                      for f, log in logs)
    head = (f"<section id=pretrain><h2>Pretraining</h2><p class=muted>{html.escape(str(path))}"
            f"</p><p class=muted>{desc}</p>")
    plots = []
    for title, pattern in _CURVES:
        xs: dict[str, np.ndarray] = {}
        ys: dict[str, np.ndarray] = {}
        xlabels = []
        for f, log in logs:
            xcol = _x_column(log)
            for c in log.columns:
                name = c.lower()
                if c == xcol or not pattern.search(name) or _NOT_CURVES.search(name):
                    continue
                key = c if c not in ys else f"{c} ({f.stem})"
                xs[key] = (log[xcol].to_numpy(dtype=float) if xcol
                           else np.arange(len(log), dtype=float))
                ys[key] = log[c].to_numpy(dtype=float)
                xlabels.append(xcol or "row")
        if not ys or all(not np.isfinite(v).any() for v in ys.values()):
            plots.append(f"<p class=muted>{html.escape(title)}: no column in the log</p>")
            continue
        fig = F.plot_lines(xs, ys, xlabel=" / ".join(dict.fromkeys(xlabels)), ylabel=title,
                           title=title)
        plots.append(_img(png_data_uri(F.figure_png(fig)), title, "plot"))
    return head + f"<div class=plots>{''.join(plots)}</div></section>"
