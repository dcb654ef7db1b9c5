"""The video-segmentation page: one overlay strip per video.

Each strip shows evenly spaced frames of a video (columns); the first row is the frames, the
second the ground-truth masks over them, then one row per backbone with its predicted masks and
its J&F on that video. Masks are drawn in the video's palette (DAVIS colours) at 50% over the
frame, with the object outlines opaque. The page is one self-contained HTML file (PNG data URIs).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval.report.html import page, png_data_uri, write_page

GAP = 4  # pixels between tiles
MIN_TILE = 96  # frames are enlarged (nearest) to at least this height
# On top of the page kit's CSS: strips keep their pixels.
CSS = """
section img { image-rendering:pixelated; max-width:100%; }
.rows { color:#555; font-size:90%; }
"""


def overlay_labels(frame: np.ndarray, labels: np.ndarray, palette: np.ndarray, *,
                   alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3) uint8`` frame with every non-zero label blended in its palette colour and
    its outline drawn opaque."""
    out = frame.astype(np.float32).copy()
    colors = np.asarray(palette, dtype=np.float32)[labels]
    fg = (labels > 0) & (labels != 255)
    out[fg] = (1 - alpha) * out[fg] + alpha * colors[fg]
    edge = np.zeros_like(fg)
    vert = labels[:-1] != labels[1:]
    horiz = labels[:, :-1] != labels[:, 1:]
    edge[:-1] |= vert
    edge[1:] |= vert
    edge[:, :-1] |= horiz
    edge[:, 1:] |= horiz
    edge &= fg
    out[edge] = colors[edge]
    return out.clip(0, 255).astype(np.uint8)


def _scale(img: np.ndarray) -> np.ndarray:
    f = max(1, -(-MIN_TILE // img.shape[0]))
    return img.repeat(f, 0).repeat(f, 1) if f > 1 else img


def strip_image(frames: np.ndarray, rows: Sequence[np.ndarray | None], palette: np.ndarray
                ) -> np.ndarray:
    """Tile ``S`` frames (columns) with the frames themselves first, then each ``(S, H, W)``
    label row over them (``None`` rows are skipped): ``(R*(h+GAP), S*(w+GAP), 3) uint8``."""
    grid = [[_scale(f) for f in frames]]
    for labels in rows:
        if labels is not None:
            grid.append([_scale(overlay_labels(f, m, palette)) for f, m in zip(frames, labels,
                                                                              strict=True)])
    h, w = grid[0][0].shape[:2]
    canvas = np.full((len(grid) * (h + GAP), len(frames) * (w + GAP), 3), 255, np.uint8)
    for r, row in enumerate(grid):
        for c, tile in enumerate(row):
            canvas[r * (h + GAP): r * (h + GAP) + h, c * (w + GAP): c * (w + GAP) + w] = tile
    return canvas


def write_video_report(path: str | Path, runs: Sequence[tuple[str, Any]], *,
                       title: str = "Video object segmentation") -> Path:
    """Write the page for ``runs``: ``(label, VideoSegRun)`` pairs over the same videos.

    Returns:
        the written path.
    """
    first = runs[0][1]
    parts = []
    for name, (frames, gt, _) in first.strips.items():
        labels = ["frames", "ground truth" if gt is not None else None]
        rows: list[np.ndarray | None] = [gt]
        for label, run in runs:
            score = run.result.per_video.get(name) if run.result is not None else None
            jf = f" (J&F {score['JF_mean']:.3f})" if score else ""
            labels.append(f"{label}{jf}")
            rows.append(run.strips[name][2])
        img = strip_image(frames, rows, first.palettes[name])
        legend = " / ".join(html.escape(x) for x in labels if x is not None)
        parts.append(f"<section><h2>{html.escape(name)}</h2><p class='rows'>{legend}</p>"
                     f"<img alt='{html.escape(name)} overlay strip' src='{png_data_uri(img)}'>"
                     "</section>")
    sub = ["Rows: frames; ground truth; then each backbone's propagated masks (DAVIS label "
           "propagation from the first frame). J&amp;F per video in the row label."]
    return write_page(path, page(title, sub, parts, css=CSS))
