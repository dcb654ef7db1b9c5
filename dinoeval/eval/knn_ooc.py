"""Out-of-core and distributed weighted k-NN: train banks larger than memory.

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
pattern) to halve the bytes read; :func:`precision_effect` measures what that costs in accuracy.

:func:`knn_classify_distributed` splits the bank across the ranks of a ``torch.distributed`` group
(as DINOv2 does on GPUs): queries are broadcast from rank 0, each rank searches its rows, and the
partial top-k lists are all-gathered and merged.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import (
    DEFAULT_KS,
    KnnResult,
    _prep,
    classify_neighbors,
    validate_inputs,
)
from dinoeval.results import Row

BANK_DTYPES = ("float32", "float16", "bfloat16")
_FAISS_BLOCK = 1024  # faiss scans the bank in blocks of this many rows; we align to it
_NORM_ROWS = 8192
_MERGE_ROWS = 2048  # queries merged at a time (bounds the sort scratch)
_MIN_ROWS = 64  # smaller blocks are still exact, only slow
_QUERY_BLOCK = 4096  # queries per search call, as knn_search does
_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20,
          "MIB": 2**20, "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40,
          "TIB": 2**40}


def parse_bytes(value: str | int) -> int:
    """``"1GB"``, ``"512M"``, ``"1.5GiB"`` or an int -> bytes (binary units)."""
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(value))
    if not m or m.group(2).upper() not in _UNITS:
        raise DinoevalError(f"cannot read memory size {value!r}; write e.g. 1GB, 512MB or 2G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


# ---------------------------------------------------------------------------------------------
# Storage precision


def encode_bank(x: np.ndarray, dtype: str) -> np.ndarray:
    """``(N, D)`` float32 -> the stored array: float32, float16, or bfloat16 bits as uint16."""
    if dtype == "float32":
        return np.asarray(x, dtype=np.float32)
    if dtype == "float16":
        return np.asarray(x, dtype=np.float32).astype(np.float16)
    if dtype == "bfloat16":
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.bfloat16)
        return t.view(torch.int16).numpy().view(np.uint16)
    raise DinoevalError(f"unknown bank dtype {dtype!r}; use one of {', '.join(BANK_DTYPES)}")


def decode_bank(block: np.ndarray) -> np.ndarray:
    """A stored block -> float32 (uint16 is read as bfloat16 bits)."""
    if block.dtype == np.uint16:
        bits = torch.from_numpy(np.ascontiguousarray(block).view(np.int16))
        return bits.view(torch.bfloat16).float().numpy()
    return np.asarray(block, dtype=np.float32)


def bank_dtype_of(dtype: np.dtype) -> str:
    """The storage name of an array dtype (uint16 means bfloat16 bits)."""
    names = {np.dtype(np.float32): "float32", np.dtype(np.float16): "float16",
             np.dtype(np.uint16): "bfloat16"}
    if np.dtype(dtype) not in names:
        raise DinoevalError(f"a k-NN bank must be float32, float16 or bfloat16 (uint16), got {dtype}")
    return names[np.dtype(dtype)]


def write_bank(bank: str | Path | np.ndarray, out: str | Path, dtype: str, *,
               normalize: bool = True, block_rows: int = 65536) -> Path:
    """Stream ``bank`` into ``out`` (``.npy``) in ``dtype``, L2-normalised first by default.

    Written to a temporary file and renamed, block by block, so it works for banks larger than
    memory.
    """
    import os

    reader = BankReader(bank)
    out = Path(out)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    enc = encode_bank(np.zeros((1, reader.dim), np.float32), dtype).dtype
    try:
        # plain writes, not a writable memmap: dirty mapped pages would count in this process's RSS
        with open(tmp, "wb") as f:
            np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(enc),
                                                     "fortran_order": False,
                                                     "shape": (len(reader), reader.dim)})
            for _, block in reader.blocks(block_rows, normalize=normalize):
                f.write(np.ascontiguousarray(encode_bank(block, dtype)).tobytes())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


# ---------------------------------------------------------------------------------------------
# Reading the bank in blocks


class BankReader:
    """Rows of an ``(N, D)`` bank, a block at a time.

    A path to an ``.npy`` file, or a memory-mapped array (what ``FeatureCache`` returns), is
    re-mapped for each block and unmapped afterwards, so pages read earlier do not stay resident.
    An in-memory array is sliced.
    """

    def __init__(self, bank: str | Path | np.ndarray) -> None:
        self.path: Path | None = None
        self.array: np.ndarray | None = None
        if isinstance(bank, np.memmap) and getattr(bank, "filename", None) and bank.ndim == 2 \
                and bank.flags.c_contiguous:
            self.path, self.offset = Path(bank.filename), int(bank.offset)
            self.shape, self.dtype = tuple(bank.shape), bank.dtype
        elif isinstance(bank, str | Path):
            self.path = Path(bank)
            if not self.path.exists():
                raise DinoevalError(f"bank file {self.path} not found; pass a features.npy path")
            try:
                with open(self.path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read(f)
                    self.offset = f.tell()
            except ValueError as err:
                raise DinoevalError(f"bank file {self.path} is not a .npy array ({err}); "
                                    "extract the features again") from None
            if fortran or len(shape) != 2:
                raise DinoevalError(f"{self.path}: a bank must be a C-ordered (N, D) array, got "
                                    f"shape {shape}")
            self.shape, self.dtype = tuple(shape), np.dtype(dtype)
            need = self.offset + int(np.prod(self.shape)) * self.dtype.itemsize
            have = self.path.stat().st_size
            if have < need:
                raise DinoevalError(f"bank file {self.path} is truncated ({have:,} of {need:,} "
                                    "bytes); extract the features again")
        else:
            self.array = np.asarray(bank)
            if self.array.ndim != 2:
                raise DinoevalError(f"k-NN needs 2-D features, got a bank of shape "
                                    f"{self.array.shape} (use a cls* feature kind, not patch)")
            self.shape, self.dtype = tuple(self.array.shape), self.array.dtype
        self.storage = bank_dtype_of(self.dtype)

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def dim(self) -> int:
        return int(self.shape[1])

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` as they are stored (a fresh copy)."""
        if self.array is not None:
            return np.array(self.array[start:stop])
        assert self.path is not None
        mm = np.memmap(self.path, dtype=self.dtype, mode="r", shape=(stop - start, self.dim),
                       offset=self.offset + start * self.dim * self.dtype.itemsize)
        out = np.array(mm)
        del mm  # unmap now, so the block's pages leave this process's RSS
        return out

    def blocks(self, rows: int, *, start: int = 0, stop: int | None = None,
               normalize: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, (b, D) float32 block)`` for rows ``[start, stop)``, ``rows`` at a time."""
        stop = len(self) if stop is None else stop
        for s in range(start, stop, rows):
            block = self.read(s, min(s + rows, stop))
            if block.dtype != np.float32:
                block = decode_bank(block)
            if normalize:
                # in place, a slice at a time: no full-size temporaries; row for row the same
                # arithmetic as knn_classify's normalisation
                for r in range(0, len(block), _NORM_ROWS):
                    block[r : r + _NORM_ROWS] = _prep(block[r : r + _NORM_ROWS], True)
            yield s, block
            del block  # before the next read, or two blocks would be alive at once


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


def process_rss() -> int:
    """Resident bytes of this process now (Linux ``/proc``; else the peak so far)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def working_budget(process_limit: int | str, *, margin: int = 64 << 20) -> int:
    """Bytes left for k-NN buffers if the whole process must stay under ``process_limit``.

    The interpreter, torch and faiss already hold ~0.5-0.6 GB here; ``margin`` covers allocator
    slack.
    """
    limit = parse_bytes(process_limit)
    left = limit - process_rss() - margin
    if left <= 0:
        raise DinoevalError(f"--max-memory {limit / 2**20:.0f} MiB is below what this process "
                            f"already uses ({process_rss() / 2**20:.0f} MiB); raise it")
    return left


def plan_blocks(n_bank: int, n_queries: int, dim: int, k: int, max_memory: int, *,
                itemsize: int = 4, backend: str = "faiss") -> BlockPlan:
    """Bank rows per block so that the working set stays under ``max_memory`` bytes.

    Fixed: the queries and their normalised copy ``M*D*8``, the running and block top-k lists
    ``M*(k+1)*24``, the merge scratch of one chunk of 2048 queries (concatenations, sort keys,
    order) ``~2048*k*110``, and 32 MiB for faiss's internal blocks. Per bank row: the mapped row
    and its float32 copy ``D*(itemsize + 4)``; the
    torch backend also holds a ``(4096, b)`` similarity block and its top-k scratch.
    """
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
    if rows >= _FAISS_BLOCK:
        rows -= rows % _FAISS_BLOCK
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
                   max_memory: int | str = "1GB", rows: tuple[int, int] | None = None,
                   backend: str = "faiss", device: str | torch.device = "cpu",
                   normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner-product neighbours, scanning the bank in memory-bounded blocks.

    Args:
        bank: ``(N, D)`` bank: ``.npy`` path, memory-mapped array, or array (float32, float16, or
            uint16 bfloat16 bits).
        queries: ``(M, D)`` float32.
        k: neighbours per query.
        max_memory: byte budget of the working buffers (``"1GB"`` or an int).
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
    plan = plan_blocks(max(stop - start, 1), len(q), reader.dim, k, parse_bytes(max_memory),
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
    max_memory: int | str = "1GB",
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


def knn_classify_distributed(
    bank: str | Path | np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None,
    test_y: np.ndarray | None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    max_memory: int | str = "1GB",
    backend: str = "faiss",
    device: str | torch.device = "cpu",
    group: object | None = None,
) -> KnnResult:
    """k-NN with the bank split across the ranks of the current ``torch.distributed`` group.

    Every rank opens the same bank (a shared ``.npy`` path or memory map) and searches only its
    contiguous rows; rank 0's queries and labels are broadcast (the others may pass None); the
    ``(M, k)`` partial top-k lists are all-gathered and merged exactly, so every rank returns the
    same result as :func:`knn_classify_ooc` on one process. With NCCL, pass ``device="cuda:<local
    rank>"`` (collectives then run on that device).
    """
    import torch.distributed as dist

    from dinoeval.features.sharded import shard_bounds

    rank, world = dist.get_rank(group), dist.get_world_size(group)
    reader = BankReader(bank)
    dev = torch.device(device)
    comm = dev if dist.get_backend(group) == "nccl" else torch.device("cpu")
    box = [None if test_x is None else (np.asarray(test_x, np.float32), np.asarray(test_y))]
    dist.broadcast_object_list(box, src=0, group=group)  # queries: small next to the bank
    test_x, test_y = box[0]
    train_y, test_y, ks, c = validate_inputs(train_y, test_x, test_y, len(reader), ks, temperature,
                                             num_classes)
    k = max(ks)
    # rank boundaries on faiss's 1024-row grid keep the similarities bit-identical to one process
    start, stop = shard_bounds(len(reader), rank, world, _FAISS_BLOCK)
    sims, idx = knn_search_ooc(bank, test_x, k, max_memory=max_memory, rows=(start, stop),
                               backend=backend, device=device)
    s_t = torch.from_numpy(sims).to(comm)
    i_t = torch.from_numpy(idx).to(comm)
    all_s = [torch.empty_like(s_t) for _ in range(world)]
    all_i = [torch.empty_like(i_t) for _ in range(world)]
    dist.all_gather(all_s, s_t, group=group)
    dist.all_gather(all_i, i_t, group=group)
    best_s, best_i = all_s[0].cpu().numpy(), all_i[0].cpu().numpy()
    for s_r, i_r in zip(all_s[1:], all_i[1:], strict=True):
        best_s, best_i = merge_topk(best_s, best_i, s_r.cpu().numpy(), i_r.cpu().numpy(), k)
    return classify_neighbors(best_s, train_y[best_i], test_y, ks, c, temperature, len(train_y))


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
                     num_classes: int | None = None, max_memory: int | str = "1GB"
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
