"""Text out: a :class:`~dinoeval.report.tables.Table` as markdown, booktabs LaTeX, CSV or JSON.

Percent columns are shown ×100 with ``digits`` decimals, other scores with 4 significant digits;
mean ± std where there are several runs or seeds; the best value of each scored column in bold
(markdown, LaTeX). CSV and JSON keep the numbers (JSON in stored units, fractions).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from dinoeval.errors import DinoevalError
from dinoeval.report.tables import Column, Table


def _number(v: float, percent: bool, digits: int) -> str:
    if percent:
        return f"{100 * v:.{digits}f}"
    return f"{v:.4g}"


def cell_text(table: Table, i: int, j: int, *, digits: int = 1, pm: str = " ± ") -> str:
    """A cell as text: ``84.5``, ``84.5 ± 0.3`` (several runs or seeds), ``–`` when missing."""
    c = table.columns[j]
    if c.text:
        return table.text.get((i, j), "–")
    v, s = table.mean[i, j], table.std[i, j]
    if not np.isfinite(v):
        return "–"
    out = _number(v, c.percent, digits)
    return out + pm + _number(s, c.percent, digits) if np.isfinite(s) else out


def _title(c: Column) -> str:
    arrow = " ↓" if c.direction < 0 else ""
    return f"{c.title}{' (%)' if c.percent else ''}{arrow}"


def render_markdown(table: Table, *, digits: int = 1) -> str:
    """A GitHub-flavoured markdown table; the best value of each scored column in bold."""
    best = table.best()
    head = [*table.index_names, *(_title(c) for c in table.columns)]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join([":---"] * len(table.index_names)
                            + [":---" if c.text else "---:" for c in table.columns]) + "|"]
    for i, rk in enumerate(table.index):
        cells = [cell_text(table, i, j, digits=digits) for j in range(len(table.columns))]
        cells = [f"**{t}**" if best[i, j] else t for j, t in enumerate(cells)]
        lines.append("| " + " | ".join([*(x.replace("|", "\\|") for x in rk), *cells]) + " |")
    return "\n".join(lines) + "\n"


_TEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
        "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
        "±": r"$\pm$", "↓": r"$\downarrow$", "–": "--", "…": r"\ldots{}"}


def tex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX table cell."""
    return "".join(_TEX.get(ch, ch) for ch in str(text))


def render_latex(table: Table, *, digits: int = 1) -> str:
    """A booktabs ``tabular`` (``\\usepackage{booktabs}``): ``\\toprule``, one ``\\midrule``,
    ``\\bottomrule``; grouped headers with ``\\cmidrule``; the best value of each scored column
    in bold; ``--`` for a missing value; mean ± std as ``84.5 $\\pm$ 0.3``."""
    best = table.best()
    ni, nc = len(table.index_names), len(table.columns)
    lines = [r"% dinoeval report; needs \usepackage{booktabs}",
             r"\begin{tabular}{" + "l" * ni + "".join("l" if c.text else "r"
                                                        for c in table.columns) + "}",
             r"\toprule"]
    levels = len(table.columns[0].key) if table.columns else 1
    for lvl in range(levels - 1):  # grouped upper header levels (dataset, eval)
        cells, rules, j = [""] * ni, [], 0
        while j < nc:
            k = j
            top = table.columns[j].key[:lvl + 1]
            while k + 1 < nc and table.columns[k + 1].key[:lvl + 1] == top:
                k += 1
            name = table.columns[j].key[lvl]
            cells.append(rf"\multicolumn{{{k - j + 1}}}{{c}}{{{tex_escape(name)}}}")
            if name:
                rules.append(rf"\cmidrule(lr){{{ni + j + 1}-{ni + k + 1}}}")
            j = k + 1
        lines += [" & ".join(cells) + r" \\", " ".join(rules)] if rules else []
    bottom = [tex_escape(n.capitalize()) for n in table.index_names]
    for c in table.columns:
        sub = (c.key[-1] if levels > 1 else c.title)
        t = Column(c.key, sub, c.percent, c.direction)
        bottom.append(tex_escape(_title(t)))
    lines += [" & ".join(bottom) + r" \\", r"\midrule"]
    for i, rk in enumerate(table.index):
        cells = [tex_escape(x) for x in rk]
        for j in range(nc):
            t = cell_text(table, i, j, digits=digits)
            head, sep, tail = t.partition(" ± ")
            head = tex_escape(head)
            cells.append((rf"\textbf{{{head}}}" if best[i, j] else head)
                         + (r" $\pm$ " + tex_escape(tail) if sep else ""))
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_csv(table: Table, *, digits: int = 1) -> str:
    """CSV: the index columns, then per column its shown value (and ``<title> std``)."""
    out = pd.DataFrame(table.index, columns=table.index_names)
    for j, c in enumerate(table.columns):
        if c.text:
            out[_title(c)] = [table.text.get((i, j), "") for i in range(len(table.index))]
            continue
        scale = 100.0 if c.percent else 1.0
        out[_title(c)] = np.round(table.mean[:, j] * scale, 6)
        if np.isfinite(table.std[:, j]).any():
            out[f"{_title(c)} std"] = np.round(table.std[:, j] * scale, 6)
    return out.to_csv(index=False)


def table_records(table: Table) -> list[dict]:
    """The table as JSON-ready records, one per non-empty cell, in stored units (fractions)."""
    recs = []
    for i, rk in enumerate(table.index):
        for j, c in enumerate(table.columns):
            base = {**dict(zip(table.index_names, rk, strict=True)), "column": c.title,
                    "key": list(c.key)}
            if c.text:
                if (i, j) in table.text:
                    recs.append({**base, "text": table.text[(i, j)]})
                continue
            if not np.isfinite(table.mean[i, j]):
                continue
            s = table.std[i, j]
            recs.append({**base, "mean": float(table.mean[i, j]),
                         "std": float(s) if np.isfinite(s) else None, "runs": int(table.runs[i, j]),
                         "unit": "fraction" if c.percent else "",
                         "higher_is_better": {1: True, -1: False}.get(c.direction)})
    return recs


def render(table: Table, fmt: str, *, digits: int = 1) -> str:
    """``markdown``, ``latex``, ``csv`` or ``json`` text of ``table``."""
    if fmt == "json":
        return json.dumps({"columns": [c.title for c in table.columns], "notes": table.notes,
                           "cells": table_records(table)}, indent=2) + "\n"
    renderers = {"markdown": render_markdown, "latex": render_latex, "csv": render_csv}
    if fmt not in renderers:
        raise DinoevalError(f"--format must be markdown, latex, csv or json, got {fmt!r}")
    return renderers[fmt](table, digits=digits)
