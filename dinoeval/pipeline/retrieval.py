"""Image retrieval and copy-detection runners (DINO's ``eval_image_retrieval.py`` and
``eval_copy_detection.py``, without a GPU or a process group).

Retrieval: CLS features of queries and gallery at one input size (DINO: 224), optionally averaged
over the scales 1, 1/sqrt(2), 1/2 and L2-normalised; every query ranks the *whole* gallery by
cosine similarity through the out-of-core exact search (:func:`~dinoeval.eval.knn_ooc.knn_search_ooc`,
faiss), a block of queries at a time so that memory stays under ``max_memory``; relevance comes
from a revisited ground-truth file (Easy/Medium/Hard) or from labels (same class; the query
itself is junk when queries and gallery are one set).

Copy detection: CLS ⊕ GeM(p=4) of the last block's patch tokens (feature kind ``cls+gem``) at a
square input (DINO: 320 px), PCA-whitened (power 0.5) with a transform learned on separate images,
then the same exact full ranking; each copy's positives are its original(s).

Input handling (:mod:`dinoeval.pipeline.retrieval_features`): retrieval keeps each image's
aspect ratio with its longer side at the input size by default (``resize="long"``, DINO's
retrieval script), copy detection resizes whole images to a square (DINO's copy-detection script).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from dinoeval.checks import at_least, one_of, option, parse_img_size, positive
from dinoeval.data._base import ImageSource
from dinoeval.data.copies import CopyBenchmark
from dinoeval.data.roxford import RevisitedGroundTruth, RevisitedSource
from dinoeval.errors import DinoevalError
from dinoeval.eval.knn_ooc import knn_search_ooc
from dinoeval.eval.retrieval import (
    AP_KINDS,
    DEFAULT_RETRIEVAL_KS,
    PROTOCOLS,
    QueryGroundTruth,
    RetrievalResult,
    average_precision,
    groundtruth_by_protocol,
    precision_recall_at,
    relevance_from_groundtruth,
    relevance_from_labels,
    summarize,
)
from dinoeval.eval.whitening import Whitening, learn_whitening
from dinoeval.features import FeatureSet
from dinoeval.models import Backbone
from dinoeval.pipeline.knn_bank import parse_bytes
from dinoeval.pipeline.retrieval_features import RESIZE_MODES, features_at, retrieval_features
from dinoeval.pipeline.setup import (
    BackboneOptions,
    ExtractOptions,
    ProgressFactory,
    as_source,
    context_for,
    notes,
)
from dinoeval.results import Context, to_frame

SHOW_HITS = 5  # hits per shown query kept for the report
QUERY_BLOCK_MAX = 65536  # queries ranked per search call at most
_SEARCH_FIXED = 40 << 20  # the search's fixed buffers (faiss scratch; see knn_ooc.fixed_bytes)


def _ranking(name: str) -> Any:
    """A field both configs share, its default and help written once (and checked once, in
    :func:`check_ranking_options`)."""
    default, help_text, flag = {
        "ks": (DEFAULT_RETRIEVAL_KS, "Cut-offs of mP@k and recall@k.", "--k"),
        "ap_kind": ("trapezoid", "trapezoid (revisited Oxford/Paris, Copydays) or step "
                    "(scikit-learn's).", "--ap"),
        "max_memory": ("1GB", "Working memory of the exact search, e.g. 1GB; queries are "
                       "ranked in blocks.", None),
        "show": (8, "Queries whose top-5 hits go to --html.", None),
    }[name]
    return option(default, help=help_text, **({"flag": flag} if flag else {}))


@dataclass(frozen=True, kw_only=True)
class RetrievalConfig:
    """Retrieval settings (defaults: DINO's ``eval_image_retrieval.py``).

    Attributes:
        ks: cut-offs of mP@k and recall@k.
        protocols: revisited protocols evaluated when a ground-truth file defines relevance.
        resize: how images meet the input side ``s``: ``long`` (aspect kept, longer side ``s``:
            DINO's ``eval_image_retrieval.py`` and the revisited protocol), ``short`` (aspect
            kept, shorter side ``s``) or ``square`` (whole image to ``s x s``); see
            :mod:`dinoeval.pipeline.retrieval_features`. Recorded in the rows' ``feature``.
        multiscale: average CLS over input sides ``s, s/sqrt(2), s/2`` (then L2-normalise).
        ap_kind: ``trapezoid`` (the revisited protocol) or ``step``.
        max_memory: working-memory budget of the search (``"1GB"``).
        show: queries whose top hits are kept for the report.
    """

    ks: tuple[int, ...] = _ranking("ks")
    protocols: tuple[str, ...] = option(("medium", "hard"), help="Revisited protocols: easy, "
                                        "medium, hard.", flag="--protocol")
    resize: str = option("long", help="How images meet --img-size: long (aspect kept, longer "
                         "side = size; DINO's script and the revisited protocol), short (aspect "
                         "kept, shorter side = size) or square (whole image squashed). Pixels are "
                         "always square.")
    multiscale: bool = option(False, help="Average CLS over input sides s, s/sqrt2, s/2, then "
                              "L2-normalise (DINO's option).")
    ap_kind: str = _ranking("ap_kind")
    max_memory: str = _ranking("max_memory")
    show: int = _ranking("show")

    def __post_init__(self) -> None:
        check_ranking_options(self.ks, self.ap_kind, self.max_memory, self.show)
        if not self.protocols:
            raise DinoevalError("give at least one --protocol")
        for p in self.protocols:
            one_of("--protocol", p, PROTOCOLS)
        one_of("--resize", self.resize, RESIZE_MODES)



SQUARE_ONLY = ("retrieval and copy detection take one side N (retrieval's --resize says how "
               "each image meets it)")



def _square_side(value: str | int | None) -> int | None:
    """``--img-size`` of copy detection: one side ``N`` (``HxW`` is refused with the reason)."""
    return parse_img_size(value, square_only=SQUARE_ONLY)


@dataclass(frozen=True, kw_only=True)
class CopyDetectionConfig:
    """Copy-detection settings (defaults: DINO's ``eval_copy_detection.py``).

    Attributes:
        img_size: square input side of ViT backbones (320); pixels use ``--pixel-size``.
        whiten: learn PCA-whitening on the benchmark's whitening images.
        whitening_power: eigenvalue exponent (0.5 whitens fully).
        ks, ap_kind, max_memory, show: as :class:`RetrievalConfig`.
    """

    img_size: int = option(320, help="Square input side of ViTs (DINO uses 320).",
                           cli=(str, _square_side, "320"), metavar="N")
    whiten: bool = option(True, help="PCA-whiten (learned on separate images).")
    whitening_power: float = option(0.5, help="0.5 whitens fully, 0 rotates.")
    ks: tuple[int, ...] = _ranking("ks")
    ap_kind: str = _ranking("ap_kind")
    max_memory: str = _ranking("max_memory")
    show: int = _ranking("show")

    def __post_init__(self) -> None:
        check_ranking_options(self.ks, self.ap_kind, self.max_memory, self.show)
        side = parse_img_size(self.img_size, square_only=SQUARE_ONLY)
        object.__setattr__(self, "img_size", side)
        at_least("--img-size", side, 8)
        if self.whitening_power < 0:
            raise DinoevalError(f"--whitening-power must be >= 0, got {self.whitening_power}")


def check_ranking_options(ks: tuple[int, ...], ap_kind: str, max_memory: str, show: int) -> None:
    """Checks shared by both configs (one-line errors naming the option)."""
    if not ks:
        raise DinoevalError("give at least one --k")
    for k in ks:
        at_least("--k", k, 1)
    one_of("--ap", ap_kind, AP_KINDS)
    positive("--max-memory", parse_bytes(max_memory))
    at_least("--show", show, 0)


@dataclass(frozen=True)
class TopHits:
    """The first hits of a few queries, for the report.

    Attributes:
        queries: ``(S,)`` query rows (source indices).
        hits: ``(S, h)`` gallery source indices, best first.
        marks: ``(S, h)`` 1 relevant, 0 irrelevant, -1 junk (under the first protocol).
        scores: ``(S, h)`` cosine similarities.
    """

    queries: np.ndarray
    hits: np.ndarray
    marks: np.ndarray
    scores: np.ndarray


@dataclass
class RetrievalRun:
    """What a retrieval or copy-detection runner produced for one backbone."""

    frame: pd.DataFrame
    results: list[RetrievalResult]
    top: TopHits
    query_source: ImageSource
    gallery_source: ImageSource
    backbone: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Ranking and evaluation on features in hand


def ranked_blocks(gallery: np.ndarray, queries: np.ndarray, *, max_memory: str = "1GB",
                  depth: int | None = None) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Exact cosine rankings of ``queries (M, D)`` over ``gallery (N, D)``, a block of queries
    at a time: ``(first query, sims (b, depth), ranked (b, depth))`` with ``depth = N`` (a full
    ranking) unless given. Ties go to the lower gallery index."""
    n, m = len(gallery), len(queries)
    depth = n if depth is None else min(depth, n)
    budget = parse_bytes(max_memory)
    # the search's working set is ~134 bytes per (query, depth) cell (see knn_ooc.plan_blocks);
    # the metrics hold a few int64 (b, depth) arrays on top
    per_query = depth * 200 + gallery.shape[1] * 8
    room = max(budget - _SEARCH_FIXED, 0) // 2
    block = int(max(1, min(m, QUERY_BLOCK_MAX, room // max(per_query, 1))))
    for s in range(0, m, block):
        sims, idx = knn_search_ooc(gallery, queries[s : s + block], depth, max_memory=budget)
        yield s, sims, idx


def evaluate_ranking(query_feats: np.ndarray, gallery_feats: np.ndarray, relevance_fn,
                     protocols: tuple[str, ...], *, ks: tuple[int, ...], ap_kind: str,
                     max_memory: str, show: int) -> tuple[list[RetrievalResult], TopHits]:
    """Rank, then score every protocol. ``relevance_fn(protocol, first, ranked)`` returns the
    ``(relevance, n_relevant)`` of the block of queries starting at ``first``."""
    per = {p: ([], [], []) for p in protocols}
    top = ([], [], [])
    for s, sims, ranked in ranked_blocks(gallery_feats, query_feats, max_memory=max_memory):
        for c, p in enumerate(protocols):
            rel, n_rel = relevance_fn(p, s, ranked)
            per[p][0].append(average_precision(rel, n_rel, kind=ap_kind))
            prec, rec = precision_recall_at(rel, n_rel, ks)
            per[p][1].append(prec)
            per[p][2].append(rec)
            if c == 0 and s < show:
                keep = slice(0, min(show - s, len(ranked)))
                top[0].append(ranked[keep, :SHOW_HITS])
                top[1].append(rel[keep, :SHOW_HITS])
                top[2].append(sims[keep, :SHOW_HITS])
    depth = len(gallery_feats)
    results = [summarize(p, np.concatenate(a), np.concatenate(pr), np.concatenate(rc), ks,
                         ap_kind=ap_kind, depth=depth) for p, (a, pr, rc) in per.items()]
    h = min(SHOW_HITS, depth)
    hits = TopHits(queries=np.arange(sum(len(t) for t in top[0])),
                   hits=np.concatenate(top[0]) if top[0] else np.zeros((0, h), np.int64),
                   marks=np.concatenate(top[1]) if top[1] else np.zeros((0, h), np.int8),
                   scores=np.concatenate(top[2]) if top[2] else np.zeros((0, h), np.float32))
    return results, hits


def evaluate_retrieval(queries: FeatureSet, gallery: FeatureSet, config: RetrievalConfig, *,
                       groundtruth: RevisitedGroundTruth | None = None, same_set: bool = False
                       ) -> tuple[list[RetrievalResult], TopHits]:
    """Retrieval metrics of features in hand.

    Args:
        queries, gallery: ``(M, D)`` and ``(N, D)`` features; their ``indices`` are source
            indices (images skipped as unreadable are absent: a missing positive counts as not
            found).
        groundtruth: a revisited ground truth (relevance per protocol); else labels define it.
        same_set: queries and gallery are the same images (each query is junk for itself).

    Returns:
        One :class:`RetrievalResult` per protocol (``labels`` when labels define relevance) and
        the top hits of the first ``config.show`` queries (gallery *source* indices).
    """
    _check_features(queries, gallery)
    g_index = np.asarray(gallery.indices, np.int64)
    if groundtruth is not None:
        gts = {p: groundtruth_by_protocol(groundtruth.entries(), p) for p in config.protocols}
        q_index = np.asarray(queries.indices, np.int64)

        def relevance(p, s, ranked):
            block = [gts[p][int(i)] for i in q_index[s : s + len(ranked)]]
            return relevance_from_groundtruth(g_index[ranked], block)
        protocols = config.protocols
    else:
        if (queries.labels < 0).any():
            raise DinoevalError("label-defined retrieval needs labelled queries; give labelled "
                                "data (class folders) or a revisited ground-truth file")
        ids = np.arange(len(queries)) if same_set else None

        def relevance(p, s, ranked):
            return relevance_from_labels(
                ranked, queries.labels[s : s + len(ranked)], gallery.labels,
                query_ids=None if ids is None else ids[s : s + len(ranked)])
        protocols = ("labels",)
    results, top = evaluate_ranking(queries.features, gallery.features, relevance, protocols,
                                    ks=config.ks, ap_kind=config.ap_kind,
                                    max_memory=config.max_memory, show=config.show)
    top = replace(top, queries=np.asarray(queries.indices)[top.queries], hits=g_index[top.hits])
    return results, top


def evaluate_copy_detection(queries: FeatureSet, database: FeatureSet,
                            positives: tuple[np.ndarray, ...], config: CopyDetectionConfig, *,
                            whitening: FeatureSet | None = None
                            ) -> tuple[RetrievalResult, TopHits, Whitening | None]:
    """Copy-detection mAP of features in hand.

    Args:
        queries: ``(M, D)`` copy features (``indices``: query source indices).
        database: ``(N, D)`` originals + distractors.
        positives: per query *source* index, database source indices of its original(s).
        whitening: ``(W, D)`` features to learn the whitening on (``None``: raw features).

    Returns:
        The ``copies`` result, the top hits, and the whitening used.
    """
    _check_features(queries, database)
    q, db, w = queries.features, database.features, None
    if whitening is not None and config.whiten:
        # at most W-1 components: the centred training set has no variance beyond its rank
        dim = min(whitening.features.shape[1], len(whitening) - 1)
        w = learn_whitening(whitening.features, power=config.whitening_power, dim=dim)
        q, db = w.apply(q), w.apply(db)
    g_index = np.asarray(database.indices, np.int64)
    q_index = np.asarray(queries.indices, np.int64)

    def relevance(p, s, ranked):
        gt = [QueryGroundTruth(ok=positives[int(i)]) for i in q_index[s : s + len(ranked)]]
        return relevance_from_groundtruth(g_index[ranked], gt)

    results, top = evaluate_ranking(q, db, relevance, ("copies",), ks=config.ks,
                                    ap_kind=config.ap_kind, max_memory=config.max_memory,
                                    show=config.show)
    top = replace(top, queries=q_index[top.queries], hits=g_index[top.hits])
    return results[0], top, w


def _check_features(queries: FeatureSet, gallery: FeatureSet) -> None:
    if queries.features.ndim != 2 or gallery.features.ndim != 2:
        raise DinoevalError("retrieval needs one vector per image (a cls* feature kind)")
    if queries.features.shape[1] != gallery.features.shape[1]:
        raise DinoevalError(f"query features have {queries.features.shape[1]} dims but gallery "
                            f"features {gallery.features.shape[1]}; use one backbone and size")
    if len(queries) == 0 or len(gallery) == 0:
        raise DinoevalError("retrieval needs at least one query and one gallery image")


def _context(backbone: Backbone, source: ImageSource, feature: str,
             gallery: ImageSource | None = None) -> Context:
    """Every identity column; a separate gallery (database) is named like a k-NN bank."""
    return replace(context_for(backbone, source, feature, train=gallery), feature=feature)


def run_retrieval(ckpt: str, query: str | ImageSource, gallery: str | ImageSource | None = None,
                  *, backbone_opts: BackboneOptions = BackboneOptions(),
                  extract_opts: ExtractOptions = ExtractOptions(),
                  config: RetrievalConfig = RetrievalConfig(),
                  progress: ProgressFactory | None = None) -> RetrievalRun:
    """Retrieval of one backbone: features of ``query`` and ``gallery`` (default: the revisited
    database of a revisited query source, else ``query`` itself), then
    :func:`evaluate_retrieval`."""
    q_src, g_src, _, _ = resolve_retrieval_sources(query, gallery)
    backbone = backbone_opts.load(ckpt)
    return retrieval_with(backbone, q_src, g_src, extract_opts=extract_opts, config=config,
                          progress=progress,
                          rescale=lambda side: replace(backbone_opts, img_size=side).load(ckpt))


def retrieval_with(backbone: Backbone, query: str | ImageSource,
                   gallery: str | ImageSource | None = None, *,
                   extract_opts: ExtractOptions = ExtractOptions(),
                   config: RetrievalConfig = RetrievalConfig(),
                   progress: ProgressFactory | None = None,
                   rescale: Callable[[int], Backbone] | None = None) -> RetrievalRun:
    """:func:`run_retrieval` with a backbone in hand, at the input size it was loaded with (the
    demo's path); ``rescale``: see :func:`retrieval_features`."""
    t0 = time.perf_counter()
    q_src, g_src, gt, same = resolve_retrieval_sources(query, gallery)
    feats, feature = retrieval_features(backbone, [q_src] if same else [q_src, g_src],
                                        extract_opts, config.multiscale, progress,
                                        resize=config.resize, rescale=rescale)
    fq, fg = feats[0], feats[-1]
    results, top = evaluate_retrieval(fq, fg, config, groundtruth=gt, same_set=same)
    rows = [r for res in results for r in res.to_rows("retrieval")]
    ctx = _context(backbone, q_src, feature, None if same else g_src)
    frame = to_frame(rows, ctx, seconds=time.perf_counter() - t0)
    return RetrievalRun(frame=frame, results=results, top=top, query_source=q_src,
                        gallery_source=g_src, backbone=backbone.spec,
                        notes=notes(backbone, (fq, q_src), (fg, g_src)))


def resolve_retrieval_sources(query: str | ImageSource, gallery: str | ImageSource | None
                              ) -> tuple[ImageSource, ImageSource, RevisitedGroundTruth | None,
                                         bool]:
    """Query and gallery sources, the revisited ground truth if any, and whether they are one
    set. Refuses (before any work) mixed or mismatched revisited sources."""
    q = as_source(query)
    if gallery is None:
        g = RevisitedSource(q.groundtruth, "database") if isinstance(q, RevisitedSource) else q
    else:
        g = as_source(gallery)
    if isinstance(q, RevisitedSource) or isinstance(g, RevisitedSource):
        if not (isinstance(q, RevisitedSource) and isinstance(g, RevisitedSource)):
            raise DinoevalError("a revisited benchmark needs both its query and database split "
                                "(e.g. --query roxford5k:query@DIR; the gallery defaults to its "
                                "database)")
        if q.split == "database" or g.split != "database":
            raise DinoevalError("use the revisited query split (query or query-full) as --query "
                                "and its database split as --gallery")
        if q.groundtruth.folder != g.groundtruth.folder:
            raise DinoevalError("--query and --gallery come from different revisited folders")
        return q, g, q.groundtruth, False
    same = q is g or (q.spec == g.spec and q.fingerprint() == g.fingerprint())
    if (q.labels < 0).any() or (g.labels < 0).all():
        raise DinoevalError(f"{q.spec if (q.labels < 0).any() else g.spec} has no labels; "
                            "label-defined retrieval needs class folders (or use a revisited "
                            "benchmark)")
    if same and len(q) < 2:
        raise DinoevalError("retrieval within one set needs at least 2 images")
    return q, g, None, same


def run_copy_detection(ckpt: str, benchmark: CopyBenchmark, *,
                       backbone_opts: BackboneOptions = BackboneOptions(),
                       extract_opts: ExtractOptions = ExtractOptions(),
                       config: CopyDetectionConfig = CopyDetectionConfig(),
                       progress: ProgressFactory | None = None) -> RetrievalRun:
    """Copy detection of one backbone on ``benchmark``: ``cls+gem`` features at a square
    ``config.img_size`` (pixels: ``--pixel-size``), whitening learned on the benchmark's
    whitening images, then :func:`evaluate_copy_detection`."""
    bopts = backbone_opts if ckpt == "pixels" else replace(backbone_opts, img_size=config.img_size)
    return copy_detection_with(bopts.load(ckpt), benchmark, extract_opts=extract_opts,
                               config=config, progress=progress)


def copy_detection_with(backbone: Backbone, benchmark: CopyBenchmark, *,
                        extract_opts: ExtractOptions = ExtractOptions(),
                        config: CopyDetectionConfig = CopyDetectionConfig(),
                        progress: ProgressFactory | None = None) -> RetrievalRun:
    """:func:`run_copy_detection` with a backbone in hand, at the input size it was loaded with
    (``config.img_size`` is not applied here; the demo uses its models' own size)."""
    t0 = time.perf_counter()
    sets = [benchmark.queries, benchmark.database]
    if benchmark.whitening is not None and config.whiten:
        sets.append(benchmark.whitening)
    feats = [features_at(backbone, s, "cls+gem", extract_opts, progress) for s in sets]
    result, top, w = evaluate_copy_detection(feats[0], feats[1], benchmark.positives, config,
                                             whitening=feats[2] if len(feats) > 2 else None)
    side = backbone.img_size[0] if backbone.img_size else None
    feature = "pixels" if backbone.kind == "pixels" else f"cls+gem@{side}"
    if w is not None:
        feature += f" whitened^{config.whitening_power:g}"
    ctx = replace(_context(backbone, benchmark.queries, feature, benchmark.database),
                  dataset=benchmark.name, split="copies")
    frame = to_frame(result.to_rows("copy-detection"), ctx, seconds=time.perf_counter() - t0)
    return RetrievalRun(frame=frame, results=[result], top=top, query_source=benchmark.queries,
                        gallery_source=benchmark.database, backbone=backbone.spec,
                        notes=notes(backbone, *zip(feats, sets, strict=True)))
