"""The notebook API: one call per evaluation, any backbone in hand.

Each function takes **backbones** and data and returns an :class:`Evaluation` (the long results
table as ``.frame`` plus the typed result per backbone label in ``.results``)::

    from dinoeval import api
    ev = api.knn({"DINO": model, "pixels": "pixels"}, train="digits:train", val="digits:test")
    ev.frame                          # the long table (dinoeval.results.COLUMNS)
    ev.results["DINO"].top1[20]       # the typed KnnResult
    ev.table("markdown")              # a paper table (dinoeval.report.tables)

A backbone is one of:

* a **spec string** (``"runs/a/checkpoint.pth"``, ``"timm:NAME"``, ``"random:ARCH"``,
  ``"pixels"``): loaded, features extracted through the cache as the CLI does;
* a **torch.nn.Module** in memory: ``forward`` must return what
  :mod:`dinoeval.features.from_module` accepts — ``(B, D)`` CLS features, ``(B, T, D)`` tokens
  with CLS first, or DINOv2's ``forward_features`` dict — or pass ``forward=lambda m, x: ...``.
  Images from a data spec get ``transform`` (default: resize + centre-crop to ``img_size``,
  ImageNet normalisation); ``(images, labels)`` tensors or a ``DataLoader`` are used as given;
* **feature arrays**: ``((train_x, train_y), (val_x, val_y))``; ``train``/``val`` are then
  omitted.

Several backbones: a dict ``{label: backbone}`` (labels name rows in every table and figure).
Progress bars use ``tqdm.auto`` (a widget in Jupyter, text elsewhere); ``progress=False`` turns
them off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from dinoeval.errors import DinoevalError
from dinoeval.features.from_module import cls_and_patches, module_features
from dinoeval.monitor import KnnMonitor, lightning_callback
from dinoeval.results import Context, concat, to_frame

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], torch.Tensor]


@dataclass
class Evaluation:
    """What an API call returns.

    Attributes:
        frame: the long results table, one row per number, ``backbone`` = the label.
        results: label -> the typed result (``KnnResult``, ``LinearProbeResult``, ...).
        features: label -> ``(train, val)`` ``(x, y)`` pairs the scores came from.
    """

    frame: pd.DataFrame
    results: dict[str, Any]
    features: dict[str, tuple] = field(default_factory=dict, repr=False)
    kind: str = ""

    def table(self, fmt: str = "markdown", *, preset: str | None = None) -> str:
        """The rows as a paper table (see :mod:`dinoeval.report.tables`)."""
        from dinoeval.report.render import render
        from dinoeval.report.tables import report_table

        return render(report_table([self.frame], preset=preset), fmt)

    def figures(self, *, class_names: Sequence[str] = (), maps: bool = False,
                max_points: int = 1500, seed: int = 0) -> dict[str, Any]:
        """Figures of the typed results (:func:`dinoeval.report.figure_set.result_figures`):
        confusion matrices (knn, linear), the RankMe spectrum (collapse), per-class accuracy;
        ``maps=True`` adds a t-SNE map (UMAP if installed) of each backbone's ``val``
        features, ``max_points`` of them (stratified, seeded)."""
        from dinoeval.eval.embedding import embed_2d, subsample
        from dinoeval.report.figure_set import result_figures

        key = {"collapse": lambda r: r.stats}.get(self.kind, lambda r: r)
        per = {lab: {self.kind: key(r)} for lab, r in self.results.items()}
        embeddings = {}
        if maps:
            for lab, (_, (x, y)) in self.features.items():
                idx = subsample(y, max_points, seed=seed)
                embeddings[lab] = (embed_2d(x[idx], method="auto", seed=seed), y[idx])
        return result_figures(per, class_names=class_names, embeddings=embeddings)


@dataclass
class _Feats:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    context: Context


def _bar(desc: str, total: int | None, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _as_backbones(backbones: Any) -> dict[str, Any]:
    if isinstance(backbones, Mapping):
        if not backbones:
            raise DinoevalError("no backbones given")
        return {str(k): v for k, v in backbones.items()}
    if isinstance(backbones, str):
        return {backbones: backbones}
    if isinstance(backbones, torch.nn.Module):
        return {type(backbones).__name__: backbones}
    if _is_feature_pair(backbones):
        return {"features": backbones}
    raise DinoevalError(f"a backbone must be a spec string, a torch.nn.Module, "
                        f"((train_x, train_y), (val_x, val_y)) arrays or a dict of those; "
                        f"got {type(backbones).__name__}")


def _is_feature_pair(obj: Any) -> bool:
    return (isinstance(obj, tuple) and len(obj) == 2 and all(
        isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], np.ndarray) for p in obj))


def _features(label: str, backbone: Any, train: Any, val: Any, opts: dict[str, Any]) -> _Feats:
    if _is_feature_pair(backbone):
        (tx, ty), (vx, vy) = backbone
        ctx = Context(label, "", "features", "", "", "given")
        return _Feats((np.asarray(tx, np.float32), np.asarray(ty, np.int64)),
                      (np.asarray(vx, np.float32), np.asarray(vy, np.int64)), ctx)
    if train is None:
        raise DinoevalError(f"{label}: pass train= (and val=) data for a model or spec")
    if isinstance(backbone, str):
        return _spec_features(label, backbone, train, val, opts)
    if isinstance(backbone, torch.nn.Module):
        tr = _module_features(label, backbone, train, opts)
        va = _module_features(label, backbone, val, opts) if val is not None else tr
        data = train if isinstance(train, str) else "tensors"
        ctx = Context(label, "", type(backbone).__name__, data.split(":")[0], "", "cls")
        return _Feats(tr, va, ctx)
    raise DinoevalError(f"{label}: unsupported backbone {type(backbone).__name__}")


def _spec_features(label: str, spec: str, train: Any, val: Any, opts: dict[str, Any]) -> _Feats:
    from dinoeval.data import get_source
    from dinoeval.pipeline import BackboneOptions, ExtractOptions, context_for, get_features

    if not isinstance(train, str) or not (val is None or isinstance(val, str)):
        raise DinoevalError(f"{label}: a spec backbone takes data specs (e.g. 'digits:train')")
    bb = BackboneOptions(img_size=opts.get("img_size")).load(spec)
    ext = ExtractOptions(feature=opts.get("feature", "cls"), batch_size=opts["batch_size"],
                         device=opts["device"], cache_dir=opts.get("cache_dir"))
    bars: list[Any] = []

    def progress(desc: str, total: int) -> Callable[[int], None]:
        bar = _bar(f"{label}: {desc}", total, opts["progress"])
        bars.append(bar)
        return lambda done: bar.update(done - bar.n)  # the extractor reports images done so far

    src_tr = get_source(train)
    ftr = get_features(bb, src_tr, ext, progress)
    fva = get_features(bb, get_source(val), ext, progress) if val is not None else ftr
    for b in bars:
        b.close()
    ctx = context_for(bb, src_tr, ext.feature)
    return _Feats((np.asarray(ftr.features), ftr.labels), (np.asarray(fva.features), fva.labels),
                  Context(label, ctx.ckpt_hash, ctx.arch, ctx.dataset, "", ctx.feature))


def _module_features(label: str, model: torch.nn.Module, data: Any, opts: dict[str, Any]
                     ) -> tuple[np.ndarray, np.ndarray]:
    kw = {"device": opts["device"], "batch_size": opts["batch_size"],
          "forward": opts.get("forward"), "num_registers": opts.get("num_registers", 0)}
    if not isinstance(data, str):
        return module_features(model, data, **kw)
    from dinoeval.data import get_source

    src = get_source(data)
    transform = opts.get("transform") or _default_transform(src, opts.get("img_size") or 224)
    bar = _bar(f"{label}: {data}", len(src), opts["progress"])

    def batches():
        for i in range(0, len(src), opts["batch_size"]):
            idx = range(i, min(i + opts["batch_size"], len(src)))
            images = [src.load(j) for j in idx]
            bar.update(len(images))
            yield transform(np.stack(images)), np.asarray(src.labels)[list(idx)]

    try:
        return module_features(model, batches(), **kw)
    finally:
        bar.close()


def _default_transform(src: Any, size: int) -> Transform:
    from dinoeval.features.transforms import EvalTransform, default_crop_ratio

    return EvalTransform(size=(size, size), crop_ratio=default_crop_ratio(src.native_size))


def _run(kind: str, backbones: Any, train: Any, val: Any, opts: dict[str, Any],
         evaluate: Callable[[_Feats], Any], rows: Callable[[Any], list]) -> Evaluation:
    frames, results, feats = [], {}, {}
    for label, bb in _as_backbones(backbones).items():
        f = _features(label, bb, train, val, opts)
        result = evaluate(f)
        results[label], feats[label] = result, (f.train, f.val)
        frames.append(to_frame(rows(result), f.context))
    return Evaluation(concat(frames), results, feats, kind)


_OPTS = ("device", "batch_size", "img_size", "transform", "forward", "num_registers",
         "feature", "cache_dir", "progress")


def _opts(kw: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(kw) - set(_OPTS))
    if unknown:
        raise DinoevalError(f"unknown option(s) {', '.join(unknown)}; extraction options are "
                            f"{', '.join(_OPTS)}")
    return {"device": "cpu", "batch_size": 128, "progress": True, **kw}


def knn(backbones: Any, train: Any = None, val: Any = None, *, k: Sequence[int] = (10, 20),
        temperature: float = 0.07, **extract: Any) -> Evaluation:
    """Weighted k-NN (DINO's ``eval_knn``) of each backbone: ``val`` classified against
    ``train``. Returns :class:`Evaluation` with ``KnnResult`` per label (with confusion
    matrices). ``extract``: device, batch_size, img_size, transform, forward, num_registers,
    feature, cache_dir, progress."""
    from dinoeval.eval.knn import knn_classify

    ks = tuple(int(x) for x in ([k] if isinstance(k, int) else k))
    return _run("knn", backbones, train, val, _opts(extract),
                lambda f: knn_classify(*f.train, *f.val, ks=ks, temperature=temperature),
                lambda r: r.to_rows())


def linear(backbones: Any, train: Any = None, val: Any = None, *, mode: str = "grid",
           epochs: int = 10, learning_rates: Sequence[float] | None = None,
           weight_decays: Sequence[float] | None = None, seed: int = 0,
           **extract: Any) -> Evaluation:
    """A linear probe per backbone, its setting chosen on a held-out part of ``train`` (see
    :mod:`dinoeval.eval.linear`); ``LinearProbeResult`` per label."""
    from dinoeval.eval.linear import LinearProbeConfig, linear_probe

    kw: dict[str, Any] = {"mode": mode, "epochs": epochs, "seed": seed}
    if learning_rates is not None:
        kw["learning_rates"] = tuple(learning_rates)
    if weight_decays is not None:
        kw["weight_decays"] = tuple(weight_decays)
    cfg = LinearProbeConfig(**kw)
    cfg.validate()
    return _run("linear", backbones, train, val, _opts(extract),
                lambda f: linear_probe(*f.train, *f.val, config=cfg), lambda r: r.to_rows())


@dataclass(frozen=True)
class CollapseResult:
    """Collapse statistics (RankMe, α-ReQ, ...) and, with labels, neural collapse (NC1, NC2)."""

    stats: Any
    neural_collapse: Any | None

    def to_rows(self) -> list:
        return self.stats.to_rows() + (self.neural_collapse.to_rows()
                                       if self.neural_collapse is not None else [])


def collapse(backbones: Any, data: Any = None, **extract: Any) -> Evaluation:
    """Collapse statistics of each backbone's features on ``data`` (RankMe with its singular
    values, α-ReQ, normalised std, uniformity) and NC1/NC2 when the data are labelled."""
    from dinoeval.eval.collapse import collapse_stats
    from dinoeval.eval.neural_collapse import neural_collapse

    def evaluate(f: _Feats) -> CollapseResult:
        x, y = f.train
        labelled = y.min(initial=0) >= 0 and len(np.unique(y)) > 1
        return CollapseResult(collapse_stats(x), neural_collapse(x, y) if labelled else None)

    return _run("collapse", backbones, data, None, _opts(extract), evaluate,
                lambda r: r.to_rows())


def clusters(backbones: Any, data: Any = None, *, k: int | None = None,
             seeds: Sequence[int] = (0, 1, 2), spherical: bool = False,
             **extract: Any) -> Evaluation:
    """k-means of each backbone's features on ``data``, scored against its labels (NMI, ARI,
    accuracy, purity; mean and std over ``seeds``)."""
    from dinoeval.eval.clusters import cluster_scores

    return _run("clusters", backbones, data, None, _opts(extract),
                lambda f: cluster_scores(*f.train, k=k, seeds=tuple(seeds), spherical=spherical),
                lambda r: r.to_rows())


__all__ = ["CollapseResult", "Evaluation", "KnnMonitor", "cls_and_patches", "clusters",
           "collapse", "knn", "lightning_callback", "linear", "module_features"]
