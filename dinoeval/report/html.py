"""The HTML page kit: inline CSS, PNG data URIs, the page frame, number formatting, the write.

Every page is self-contained: every image a base64 PNG data URI, CSS inline, nothing fetched.
The pages themselves are one module each: :mod:`dinoeval.report.results_page` (the results
table), :mod:`dinoeval.report.attention_page`, :mod:`dinoeval.report.retrieval` (top hits) and
:mod:`dinoeval.report.video` (overlay strips). The kit imports none of them.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dinoeval._io import atomic_write_text

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


def img_tag(uri: str, alt: str, cls: str = "", style: str = "") -> str:
    """An ``<img>`` element of a data URI (``alt`` escaped)."""
    c = f' class="{cls}"' if cls else ""
    st = f' style="{style}"' if style else ""
    return f'<img{c}{st} src="{uri}" alt="{html.escape(alt)}">'


def page(title: str, subtitle: Sequence[str], body: Sequence[str], *, css: str = "") -> str:
    """A whole HTML document: the kit's CSS (plus ``css``), a header with ``title`` and one
    paragraph per ``subtitle`` line (HTML, not escaped), then ``body`` in ``<main>``."""
    sub = "".join(f"<p>{s}</p>" for s in subtitle)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<style>{CSS}{css}</style></head><body><header><h1>{html.escape(title)}</h1>{sub}"
            f"</header><main>{''.join(body)}</main></body></html>\n")


def now_utc() -> str:
    """The time of writing, ``YYYY-MM-DD HH:MM UTC``."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def fmt(v: Any, digits: int = 3) -> str:
    """A number with ``digits`` decimals, "–" for None/NaN/inf, anything else escaped text."""
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float | np.floating) else html.escape(str(v))



def write_page(path: str | Path, text: str) -> Path:
    """Write a page atomically (temporary file beside it, renamed into place); its folder is
    created. Returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, text)
