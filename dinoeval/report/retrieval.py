"""The retrieval view: for a few queries, each backbone's top hits side by side.

Self-contained HTML (every image a base64 PNG data URI, CSS inline, nothing fetched). A hit's
frame says what the ground truth makes of it: green relevant, red irrelevant, grey dashed junk
(ignored by the metrics, e.g. the query itself or a revisited "junk" image).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval.errors import DinoevalError
from dinoeval.report.html import now_utc, page, png_data_uri, write_page

MARKS = {1: ("relevant", "rel"), 0: ("irrelevant", "irr"), -1: ("junk (ignored)", "junk")}
_THUMB = 96  # CSS px of a thumbnail's longer side

# On top of the page kit's CSS: a row per backbone, hits framed by their ground-truth mark.
CSS = """
section { overflow-x:auto; }
h2 { font-size:15px; margin:0 0 8px; }
.legend span { display:inline-block; margin-right:14px; font-size:12.5px; }
.row { display:flex; gap:14px; align-items:flex-start; padding:6px 0;
       border-top:1px solid #e2e6eb; }
.row:first-of-type { border-top:none; }
.name { width:180px; flex:none; font-size:12.5px; overflow-wrap:anywhere; }
.name b { display:block; font-size:13px; }
.hits { display:flex; gap:6px; flex-wrap:wrap; }
figure { margin:0; width:104px; text-align:center; font-size:11px; color:#5f6b7a; }
figure img { width:96px; height:auto; image-rendering:pixelated; display:block;
             margin:0 auto 2px; border:4px solid #ccc; border-radius:4px; }
figure.query img { border-color:#0a7bbd; }
figure.rel img { border-color:#1f9d55; }
figure.irr img { border-color:#d64545; }
figure.junk img { border:4px dashed #9aa5b1; opacity:.75; }
.sw { display:inline-block; width:12px; height:12px; border-radius:2px; margin-right:4px;
      vertical-align:-1px; }
"""


def _thumb(image: np.ndarray, side: int = 192) -> np.ndarray:
    """Shrink large images (the page stays small); small ones keep their pixels."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    from PIL import Image

    s = side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * s)), max(1, round(h * s))),
                                                    Image.Resampling.BICUBIC))


def _figure(uri: str, cls: str, caption: str, alt: str) -> str:
    return (f'<figure class="{cls}"><img src="{uri}" alt="{html.escape(alt)}">'
            f"{html.escape(caption)}</figure>")


def write_retrieval_report(runs: Sequence[Any], out: str | Path, *, title: str = "Retrieval",
                           labels: Sequence[str] | None = None) -> Path:
    """Write the top hits of each run (one per backbone, same queries and gallery) to ``out``.

    Args:
        runs: :class:`~dinoeval.pipeline.retrieval.RetrievalRun` objects; their ``top`` holds
            query and gallery *source* indices, marks and scores.
        labels: a name per run (default: its backbone spec).

    Raises:
        DinoevalError: no runs, or runs over different queries.
    """
    if not runs:
        raise DinoevalError("the retrieval view needs at least one run")
    labels = list(labels) if labels else [r.backbone for r in runs]
    queries = runs[0].top.queries
    for r in runs[1:]:
        if not np.array_equal(r.top.queries, queries):
            raise DinoevalError("runs in one retrieval view must show the same queries")
    q_src, g_src = runs[0].query_source, runs[0].gallery_source
    cache: dict[int, str] = {}

    def gallery_uri(i: int) -> str:
        if i not in cache:
            cache[i] = png_data_uri(_thumb(g_src.load(int(i))))
        return cache[i]

    sections = []
    for qi, q in enumerate(queries):
        rows = [f'<div class="row"><div class="name"><b>query {int(q)}</b></div><div class="hits">'
                + _figure(png_data_uri(_thumb(q_src.load(int(q)))), "query", "query",
                          f"query {int(q)}") + "</div></div>"]
        for r, lab in zip(runs, labels, strict=True):
            figs = []
            for rank, (g, m, s) in enumerate(zip(r.top.hits[qi], r.top.marks[qi],
                                                 r.top.scores[qi], strict=True)):
                word, cls = MARKS[int(m)]
                figs.append(_figure(gallery_uri(int(g)), cls, f"#{rank + 1} {word} {s:.3f}",
                                    f"hit {rank + 1}: gallery {int(g)}, {word}"))
            ap = r.results[0].ap[qi] if qi < len(r.results[0].ap) else float("nan")
            ap_txt = "no positives" if np.isnan(ap) else f"AP {ap:.3f} ({r.results[0].protocol})"
            rows.append(f'<div class="row"><div class="name"><b>{html.escape(lab)}</b>'
                        f"{html.escape(ap_txt)}</div><div class=\"hits\">{''.join(figs)}</div>"
                        "</div>")
        sections.append(f"<section><h2>Query {int(q)} of {html.escape(q_src.spec)}</h2>"
                        + "".join(rows) + "</section>")
    legend = ('<section class="legend"><span><i class="sw" style="background:#0a7bbd"></i>query'
              '</span><span><i class="sw" style="background:#1f9d55"></i>relevant</span>'
              '<span><i class="sw" style="background:#d64545"></i>irrelevant</span>'
              '<span><i class="sw" style="border:2px dashed #9aa5b1"></i>junk: ignored by the '
              "metrics (the query itself, revisited junk)</span></section>")
    maps = "; ".join(f"{lab}: mAP {r.results[0].mean_ap:.3f}" for r, lab in zip(runs, labels,
                                                                                 strict=True))
    sub = [f"{html.escape(q_src.spec)} against {html.escape(g_src.spec)} · top "
           f"{runs[0].top.hits.shape[1]} hits · {now_utc()}", html.escape(maps)]
    return write_page(out, page(title, sub, [legend, *sections], css=CSS))
