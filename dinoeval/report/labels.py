"""Backbone labels for reports: a short unique label per backbone spec, or ``NAME=SPEC``.

Each backbone spec gets a short label (:func:`default_labels`: the shortest unique tail of its
path, never an absolute path), or the one given by ``NAME=SPEC`` (:func:`apply_labels`). Several
specs under one label are several runs of one model: tables average their values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePath

import pandas as pd

from dinoeval.errors import DinoevalError


def default_labels(specs: Sequence[str]) -> dict[str, str]:
    """A short, unique label per backbone spec: the shortest tail of its path that tells it
    apart (``runs/a/checkpoint.pth`` -> ``a/checkpoint.pth``), its ``kind:`` prefix kept
    (``random:…``); never an absolute path."""
    specs = list(dict.fromkeys(map(str, specs)))
    parts = {s: _spec_parts(s) for s in specs}

    def tail(s: str, n: int) -> tuple[str, tuple[str, ...]]:
        return parts[s][0], parts[s][1][-n:]

    out = {}
    for s in specs:
        prefix, p = parts[s]
        n = 2 if len(p) > 1 and re.match(r"(checkpoint|teacher|model)", p[-1]) else 1
        while n < len(p) and sum(tail(o, n) == tail(s, n) for o in specs) > 1:
            n += 1
        out[s] = prefix + "/".join(p[-n:])
    return out


def _spec_parts(spec: str) -> tuple[str, tuple[str, ...]]:
    """``(prefix, path parts)``: ``random:runs/a.pth`` -> ``("random:", ("runs", "a.pth"))``."""
    prefix = ""
    m = re.match(r"^([a-z]+:)", spec)
    if m and not re.match(r"^[A-Za-z]:[\\/]", spec):
        prefix, spec = m.group(1), spec[len(m.group(1)):]
    parts = tuple(p for p in PurePath(spec).parts if p not in ("/", ""))
    return prefix, parts or (spec,)


def latest_checkpoints(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows of each backbone's latest checkpoint hash only, and a note per backbone whose file
    changed (older rows measured a file that is no longer there)."""
    if df.empty:
        return df, []
    last = df.sort_values("timestamp", kind="stable").groupby("backbone")["ckpt_hash"].last()
    keep = df["ckpt_hash"].astype(str) == df["backbone"].map(last).astype(str)
    notes = [f"{b}: {n} rows of older checkpoint versions (other hashes) left out"
             for b, n in df[~keep].groupby("backbone").size().items()]
    return df[keep], notes


def parse_labels(items: Sequence[str]) -> list[tuple[str, str]]:
    """``NAME=SPEC`` strings as ``(name, spec)`` pairs (SPEC: a backbone spec, a path tail or a
    checkpoint-hash prefix)."""
    pairs = []
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name.strip() or not spec.strip():
            raise DinoevalError(f"--label {item!r} must read NAME=SPEC, e.g. "
                                "DINO=runs/a/checkpoint.pth")
        pairs.append((name.strip(), spec.strip()))
    return pairs


def apply_labels(df: pd.DataFrame, pairs: Sequence[tuple[str, str]] = ()) -> pd.DataFrame:
    """``df`` with a ``label`` column: the given ``(name, spec)`` labels, else the label stored
    with the row (``--ckpt NAME=SPEC`` when it was measured), else the defaults.

    A spec matches a backbone equal to it, a backbone path ending in it, or a checkpoint hash
    starting with it; one that matches nothing is an error naming the stored backbones."""
    backbones = list(dict.fromkeys(df["backbone"].astype(str)))
    shown = default_labels(backbones)
    stored = (df["label"].fillna("").astype(str).replace({"nan": "", "<NA>": ""})
              if "label" in df else pd.Series("", index=df.index))
    labels: dict[str, str] = {}
    for name, spec in pairs:
        hit = [b for b in backbones if b == spec or b.endswith("/" + spec.lstrip("./"))]
        hashes = df.loc[df["ckpt_hash"].astype(str).str.startswith(spec), "backbone"]
        hit += [b for b in hashes.astype(str).unique() if b not in hit]
        if not hit:
            raise DinoevalError(f"--label {name}={spec}: no backbone matches; the tables hold "
                                f"{', '.join(shown.values())}")
        labels.update(dict.fromkeys(hit, name))
    spec = df["backbone"].astype(str)
    given = spec.map(lambda s: labels.get(s, ""))
    per_row = given.where(given != "", stored.where(stored != "", spec.map(shown)))
    return df.assign(label=per_row)
