"""Out-of-core weighted k-NN: train banks larger than memory, searched exactly in blocks.

The bank (an ``.npy`` file, or an array) is read as memory-mapped blocks of rows; each block is
mapped, copied to L2-normalised float32, searched exactly, and unmapped, so the resident memory is
bounded by ``max_memory`` (the working buffers; the interpreter and libraries come on top) and not
by the bank size. Each block's top-k is merged into the running top-k exactly, ordering by
(similarity descending, bank index ascending). Blocks are aligned to faiss's internal 1024-row
scan, so the similarities are bit-identical to the in-memory
:func:`~dinoeval.eval.knn.knn_classify`, and so are the neighbours and predictions - except where
rows tie *exactly* at the k-th similarity: faiss's heap then keeps an arbitrary (heap-order) subset
of them, while here the lowest bank indices win, whatever the block size or the number of ranks.
That changes a prediction only when the tied rows carry different labels: duplicate images, or
(measured on a random-init ViT whose features sit near cos = 1) distinct rows whose float32
similarities coincide; there the out-of-core result is the deterministic one.

The bank may be stored as float16 or bfloat16 (bfloat16 is kept in ``.npy`` as its uint16 bit
pattern) to halve the bytes read (the format lives in :mod:`dinoeval.eval._bank`);
:func:`precision_effect` measures what that costs in accuracy.

The core is told, not asked: ``max_memory`` is a byte count and ``rows`` a bank row range. The
runner (:mod:`dinoeval.pipeline.knn_bank`) measures the process's memory, splits the bank across
the ranks of a ``torch.distributed`` group and merges their partial lists with
:func:`merge_partials`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval._bank import BANK_DTYPES, BankReader, decode_bank, encode_bank, write_bank
from dinoeval.eval.knn import (
    DEFAULT_KS,
    KnnResult,
    _prep,
    classify_neighbors,
    validate_inputs,
)
from dinoeval.results import Row

__all__ = [  # the bank's format is public here; it lives in _bank
    "BANK_DTYPES", "DEFAULT_MAX_MEMORY", "FAISS_BLOCK", "BankReader", "BlockPlan",
    "PrecisionEffect", "decode_bank", "encode_bank", "fixed_bytes", "knn_classify_ooc",
    "knn_search_ooc", "merge_partials", "merge_topk", "plan_blocks", "precision_effect",
    "write_bank",
]

FAISS_BLOCK = 1024  # faiss scans the bank in blocks of this many rows; we align to it
_MERGE_ROWS = 2048  # queries merged at a time (bounds the sort scratch)
_MIN_ROWS = 64  # smaller blocks are still exact, only slow
_QUERY_BLOCK = 4096  # queries per search call, as knn_search does
DEFAULT_MAX_MEMORY = 1 << 30  # bytes of working buffers when the caller does not say


# ---------------------------------------------------------------------------------------------
# Exact block search and merging


@dataclass(frozen=True)
class BlockPlan:
    """How a search is cut to fit ``max_memory``.

    Attributes:
        bank_rows: bank rows per block.
        n_blocks: blocks per scan.
        working_bytes: estimated peak bytes of the working buffers.
    """

    bank_rows: int
    n_blocks: int
    working_bytes: int


def fixed_bytes(n_queries: int, dim: int, k: int) -> int:
    """Working bytes that do not depend on the bank block size (see :func:`plan_blocks`)."""
    return (n_queries * dim * 8 + n_queries * (k + 1) * 24
            + min(n_queries, _MERGE_ROWS) * k * 110 + (32 << 20))


def plan_blocks(n_bank: int, n_queries: int, dim: int, k: int, max_memory: int, *,
                itemsize: int = 4, backend: str = "faiss") -> BlockPlan:
    """Bank rows per block so that the working set stays under ``max_memory`` bytes.

    Fixed: the queries and their normalised copy ``M*D*8``, the running and block top-k lists
    ``M*(k+1)*24``, the merge scratch of one chunk of 2048 queries (concatenations, sort keys,
    order) ``~2048*k*110``, and 32 MiB for faiss's internal blocks. Per bank row: the mapped row
    and its float32 copy ``D*(itemsize + 4)``; the
    torch backend also holds a ``(4096, b)`` similarity block and its top-k scratch.
    """
    if isinstance(max_memory, bool) or not isinstance(max_memory, int | np.integer):
        raise DinoevalError(f"max_memory is a byte count, got {max_memory!r}; read sizes such as "
                            "'1GB' with dinoeval.pipeline.knn_bank.parse_bytes")
    fixed = fixed_bytes(n_queries, dim, k)
    per_row = dim * (itemsize + 4) + (2 * min(n_queries, _QUERY_BLOCK) * 4 if backend == "torch"
                                      else 0)
    room = max_memory - fixed
    if room < per_row * min(n_bank, _MIN_ROWS):
        need = fixed + per_row * min(n_bank, _MIN_ROWS)
        raise DinoevalError(f"--max-memory {max_memory / 2**20:.0f} MiB is too small for "
                            f"{n_queries} queries x k={k} (needs about {need / 2**20:.0f} MiB); "
                            "raise it or search fewer queries at a time")
    rows = min(n_bank, room // per_row)
    if rows >= FAISS_BLOCK:
        rows -= rows % FAISS_BLOCK
    rows = max(int(rows), 1)
    return BlockPlan(bank_rows=rows, n_blocks=-(-n_bank // rows),
                     working_bytes=int(fixed + rows * per_row))


def merge_topk(sims_a: np.ndarray, idx_a: np.ndarray, sims_b: np.ndarray, idx_b: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of two candidate lists ``(M, ka)``, ``(M, kb)``.

    Ordered by similarity descending, then bank index ascending (padding has index ``-1`` and
    similarity ``-inf`` and sorts last).
    """
    sims = np.concatenate([sims_a, sims_b], axis=1)
    idx = np.concatenate([idx_a, idx_b], axis=1)
    tie = np.where(idx < 0, np.iinfo(np.int64).max, idx)
    order = np.lexsort((tie, -sims.astype(np.float64)), axis=1)[:, :k]
    return np.take_along_axis(sims, order, axis=1), np.take_along_axis(idx, order, axis=1)


def _faiss_knn(queries: np.ndarray, block: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    sims = np.empty((len(queries), k), np.float32)
    idx = np.empty((len(queries), k), np.int64)
    for s in range(0, len(queries), _QUERY_BLOCK):
        sims[s : s + _QUERY_BLOCK], idx[s : s + _QUERY_BLOCK] = faiss.knn(
            queries[s : s + _QUERY_BLOCK], block, k, metric=faiss.METRIC_INNER_PRODUCT)
    return sims, idx


def _search_block_faiss(queries: np.ndarray, block: np.ndarray, k: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """faiss top-``k`` of one block, exact ties at the ``k``-th similarity to the lowest indices.

    faiss's heap keeps an arbitrary subset of tied rows. A ``k+1`` search finds the queries whose
    ``k``-th similarity is tied beyond the list; their query chunks are searched again with a
    larger k until every tied row is listed (the same BLAS calls give the same values), then
    sorted by (similarity, index).
    """
    n = len(block)
    kk = min(k + 1, n)
    sims, idx = _faiss_knn(queries, block, kk)
    if kk == k:
        return sims, idx
    tied = np.nonzero(sims[:, k - 1] == sims[:, k])[0]
    for c0 in np.unique(tied // _QUERY_BLOCK) * _QUERY_BLOCK:
        chunk = queries[c0 : c0 + _QUERY_BLOCK]
        rows = tied[(tied >= c0) & (tied < c0 + len(chunk))] - c0
        big = kk
        while True:
            big = min(2 * big, n)
            # whole chunk, so faiss makes exactly the same BLAS calls (same rounding)
            bs, bi = _faiss_knn(chunk, block, big)
            bs, bi = bs[rows], bi[rows]
            if big == n or (bs[:, -1] < bs[:, k - 1]).all():
                break
        order = np.lexsort((bi, -bs.astype(np.float64)), axis=1)[:, :k]
        sims[c0 + rows, :k] = np.take_along_axis(bs, order, axis=1)
        idx[c0 + rows, :k] = np.take_along_axis(bi, order, axis=1)
    return sims[:, :k], idx[:, :k]


def _search_block_torch(queries: torch.Tensor, block: np.ndarray, k: int, device: torch.device
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Matmul + topk on ``device``; rows whose ``k``-th value is tied beyond the list are re-done
    with a stable sort so the lowest bank indices win."""
    b = torch.from_numpy(block).to(device)
    out_s, out_i = [], []
    for s in range(0, len(queries), _QUERY_BLOCK):
        sims = queries[s : s + _QUERY_BLOCK] @ b.T
        top_s, top_i = torch.topk(sims, k, dim=1)
        kth = top_s[:, -1:]
        tied = ((sims >= kth).sum(1) > k).nonzero().squeeze(1)
        if len(tied):  # a stable full sort of those rows: the lowest indices win, as in faiss
            srt_s, srt_i = torch.sort(sims[tied], dim=1, descending=True, stable=True)
            top_s[tied], top_i[tied] = srt_s[:, :k], srt_i[:, :k]
        out_s.append(top_s.float().cpu())
        out_i.append(top_i.cpu())
    return torch.cat(out_s).numpy(), torch.cat(out_i).numpy().astype(np.int64)


def knn_search_ooc(bank: str | Path | np.ndarray, queries: np.ndarray, k: int, *,
                   max_memory: int = DEFAULT_MAX_MEMORY, rows: tuple[int, int] | None = None,
                   backend: str = "faiss", device: str | torch.device = "cpu",
                   normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours, scanning the bank in memory-bounded blocks.

    Args:
        bank: ``(N, D)`` bank: ``.npy`` path, memory-mapped array, or array (float32, float16, or
            uint16 bfloat16 bits).
        queries: ``(M, D)`` float32.
        k: neighbours per query.
        max_memory: byte budget of the working buffers.
        rows: search only bank rows ``[start, stop)`` (returned indices stay global).
        backend: ``faiss`` (CPU) or ``torch`` (matmul + topk on ``device``, e.g. CUDA).
        normalize: L2-normalise bank and queries (cosine similarity).

    Returns:
        ``sims (M, k) float32`` descending and ``idx (M, k) int64`` global bank rows; where the
        searched rows are fewer than ``k`` the tail is ``-inf`` / ``-1``.
    """
    reader = BankReader(bank)
    if backend not in ("faiss", "torch"):
        raise DinoevalError(f"unknown k-NN backend {backend!r}; use faiss or torch")
    start, stop = rows if rows is not None else (0, len(reader))
    q = _prep(queries, normalize)
    if q.ndim != 2 or q.shape[1] != reader.dim:
        raise DinoevalError(f"the bank has {reader.dim} dims but the queries have shape {q.shape}; "
                            "extract both with the same backbone and kind")
    plan = plan_blocks(max(stop - start, 1), len(q), reader.dim, k, max_memory,
                       itemsize=reader.dtype.itemsize, backend=backend)
    best_s = np.full((len(q), k), -np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    dev = torch.device(device)
    q_t = torch.from_numpy(q).to(dev) if backend == "torch" else None
    for first, block in reader.blocks(plan.bank_rows, start=start, stop=stop, normalize=normalize):
        if not np.isfinite(block).all():
            raise DinoevalError(f"train features contain NaN or inf (rows {first}..."
                                f"{first + len(block) - 1}); re-extract them (check --precision)")
        kb = min(k, len(block))
        if backend == "faiss":
            s, i = _search_block_faiss(q, block, kb)
        else:
            s, i = _search_block_torch(q_t, block, kb, dev)
        del block
        i += first
        for c in range(0, len(q), _MERGE_ROWS):
            sl = slice(c, c + _MERGE_ROWS)
            best_s[sl], best_i[sl] = merge_topk(best_s[sl], best_i[sl], s[sl], i[sl], k)
        del s, i
    return best_s, best_i


def merge_partials(partials: Sequence[tuple[np.ndarray, np.ndarray]], k: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` of several ``(sims (M, k), idx (M, k))`` lists over disjoint bank rows
    (one per rank), as :func:`merge_topk` orders them."""
    best_s, best_i = partials[0]
    for s_r, i_r in partials[1:]:
        best_s, best_i = merge_topk(best_s, best_i, s_r, i_r, k)
    return best_s, best_i


# ---------------------------------------------------------------------------------------------
# Classification


def knn_classify_ooc(
    bank: str | Path | np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    backend: str = "faiss",
    device: str | torch.device = "cpu",
    normalize: bool = True,
) -> KnnResult:
    """:func:`~dinoeval.eval.knn.knn_classify` with the bank read in ``max_memory``-sized blocks.

    Args:
        bank: ``(N, D)`` train features (see :func:`knn_search_ooc`); ``train_y (N,)`` labels.
        test_x: ``(M, D)`` queries held in memory; ``test_y (M,)`` labels.
    """
    reader = BankReader(bank)
    test_x = np.asarray(test_x)
    train_y, test_y, ks, c = validate_inputs(train_y, test_x, test_y, len(reader), ks, temperature,
                                             num_classes)
    sims, idx = knn_search_ooc(bank, test_x, max(ks), max_memory=max_memory, backend=backend,
                               device=device, normalize=normalize)
    return classify_neighbors(sims, train_y[idx], test_y, ks, c, temperature, len(train_y))


# ---------------------------------------------------------------------------------------------
# Storage precision effect


@dataclass(frozen=True)
class PrecisionEffect:
    """k-NN accuracy with the bank stored in each precision, against float32.

    Attributes:
        results: KnnResult per bank dtype.
        agreement: per dtype and k, the fraction of test predictions equal to float32's.
    """

    results: dict[str, KnnResult]
    agreement: dict[str, dict[int, float]]

    def to_rows(self) -> list[Row]:
        rows = []
        ref = self.results["float32"]
        for dt, r in self.results.items():
            for k in r.ks:
                n = r.n_test
                rows.append(Row("knn", "top1", r.top1[k], f"k={k} bank={dt}", n))
                rows.append(Row("knn", "top1_minus_fp32", r.top1[k] - ref.top1[k],
                                f"k={k} bank={dt}", n))
                rows.append(Row("knn", "pred_agreement_fp32", self.agreement[dt][k],
                                f"k={k} bank={dt}", n))
        return rows


def precision_effect(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray,
                     test_y: np.ndarray, *, dtypes: Sequence[str] = BANK_DTYPES,
                     ks: Sequence[int] = DEFAULT_KS, temperature: float = 0.07,
                     num_classes: int | None = None, max_memory: int = DEFAULT_MAX_MEMORY
                     ) -> PrecisionEffect:
    """Run the k-NN with the (normalised) bank stored in each of ``dtypes``; ``train_x (N, D)``
    is encoded in memory here, so use :func:`write_bank` + :func:`knn_classify_ooc` for banks
    larger than memory."""
    dtypes = ["float32", *[d for d in dtypes if d != "float32"]]
    base = _prep(np.asarray(train_x), True)
    results = {dt: knn_classify_ooc(encode_bank(base, dt), train_y, test_x, test_y, ks=ks,
                                    temperature=temperature, num_classes=num_classes,
                                    max_memory=max_memory)
               for dt in dtypes}
    ref = results["float32"]
    agreement = {dt: {k: float(np.mean(r.predictions[k] == ref.predictions[k])) for k in r.ks}
                 for dt, r in results.items()}
    return PrecisionEffect(results=results, agreement=agreement)
