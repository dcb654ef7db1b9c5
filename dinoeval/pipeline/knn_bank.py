"""The out-of-core (and, under torchrun, distributed) k-NN runner: ``dinoeval knn-bank``.

It reads two feature-cache entries, sizes the bank blocks from what the process may still use
(``--max-memory`` minus this process's resident memory, read from ``/proc``), and calls the exact
block search of :mod:`dinoeval.eval.knn_ooc`. Under ``torchrun --nproc_per_node N`` the bank is
split across the ranks of the process group (``gloo`` on CPU, ``nccl`` on CUDA; each rank uses
``cuda:$LOCAL_RANK``) as DINOv2 does on GPUs: queries are broadcast from rank 0, each rank
searches its rows, and the partial top-k lists are all-gathered and merged exactly.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dinoeval.checks import check_device, one_of, option
from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import DEFAULT_KS, KnnResult, classify_neighbors, validate_inputs
from dinoeval.eval.knn_ooc import (
    BANK_DTYPES,
    FAISS_BLOCK,
    BankReader,
    knn_classify_ooc,
    knn_search_ooc,
    merge_partials,
    plan_blocks,
    write_bank,
)
from dinoeval.features.entries import find_entry, load_npy
from dinoeval.features.sharded import shard_bounds
from dinoeval.pipeline.knn import KnnConfig
from dinoeval.results import Context, resolution_text, to_frame

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


@dataclass(frozen=True, kw_only=True)
class KnnBankConfig:
    """How ``knn-bank`` reads the bank.

    Attributes:
        max_memory: peak memory of the whole process (``"1GB"``, ``"512MB"`` or bytes); what the
            process already holds is subtracted and the rest sizes the bank blocks.
        bank_dtype: float32 (exact), float16 or bfloat16 (a normalised copy is written once
            beside ``features.npy``).
        backend: ``faiss`` (CPU) or ``torch`` (any device).
        device: torch device of the search (and of NCCL collectives); under torchrun,
            ``cuda`` becomes each rank's ``cuda:$LOCAL_RANK``.
    """

    max_memory: str | int = option(
        "1GB", help="Peak memory of this process, e.g. 1GB: what torch/faiss already hold is "
        "subtracted and the rest sizes the bank blocks.", cli=(str, lambda v: v, "1GB"))
    bank_dtype: str = option(
        "float32", help="Bank storage: float32 (exact), float16 or bfloat16 (a normalised copy is "
        "written once beside features.npy).")
    backend: str = option("faiss", help="faiss (CPU) or torch (any --device).")
    device: str = option("cpu", help="cpu, cuda, cuda:1, ...")

    def __post_init__(self) -> None:
        check_device(self.device)
        parse_bytes(self.max_memory)
        if self.bank_dtype not in BANK_DTYPES:
            raise DinoevalError(f"--bank-dtype must be one of {', '.join(BANK_DTYPES)}, got "
                                f"{self.bank_dtype!r}")
        one_of("--backend", self.backend, ("faiss", "torch"))


def init_distributed(device: str) -> tuple[int, int, str, bool]:
    """Join torchrun's process group when ``WORLD_SIZE > 1``.

    Returns:
        rank, world size, this rank's device, and whether this call created the group.
    """
    import torch.distributed as dist

    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and ":" not in device and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if dist.is_available() and dist.is_initialized():  # a group set up by the caller
        return dist.get_rank(), dist.get_world_size(), device, False
    if world <= 1:
        return 0, 1, device, False
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, True


def bank_file(entry: Path, dtype: str) -> Path:
    """``features.npy``, or a ``features.<dtype>.npy`` copy written once (L2-normalised)."""
    if dtype not in BANK_DTYPES:
        raise DinoevalError(f"--bank-dtype must be one of {', '.join(BANK_DTYPES)}, got {dtype!r}")
    src = entry / "features.npy"
    if dtype == "float32":
        return src
    out = entry / f"features.{dtype}.npy"
    if not out.exists():
        write_bank(src, out, dtype)
    return out


def knn_classify_distributed(
    bank: str | Path | np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray | None,
    test_y: np.ndarray | None,
    *,
    ks: Sequence[int] = DEFAULT_KS,
    temperature: float = 0.07,
    num_classes: int | None = None,
    max_memory: int = 1 << 30,
    backend: str = "faiss",
    device: str | torch.device = "cpu",
    group: object | None = None,
) -> KnnResult:
    """k-NN with the bank split across the ranks of the current ``torch.distributed`` group.

    Every rank opens the same bank (a shared ``.npy`` path or memory map) and searches only its
    contiguous rows; rank 0's queries and labels are broadcast (the others may pass None); the
    ``(M, k)`` partial top-k lists are all-gathered and merged exactly, so every rank returns the
    same result as :func:`~dinoeval.eval.knn_ooc.knn_classify_ooc` on one process. With NCCL, pass
    ``device="cuda:<local rank>"`` (collectives then run on that device). ``max_memory`` is the
    byte budget of this rank's working buffers.
    """
    import torch.distributed as dist

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
    start, stop = shard_bounds(len(reader), rank, world, FAISS_BLOCK)
    sims, idx = knn_search_ooc(bank, test_x, k, max_memory=max_memory, rows=(start, stop),
                               backend=backend, device=device)
    s_t = torch.from_numpy(sims).to(comm)
    i_t = torch.from_numpy(idx).to(comm)
    all_s = [torch.empty_like(s_t) for _ in range(world)]
    all_i = [torch.empty_like(i_t) for _ in range(world)]
    dist.all_gather(all_s, s_t, group=group)
    dist.all_gather(all_i, i_t, group=group)
    best_s, best_i = merge_partials([(s.cpu().numpy(), i.cpu().numpy())
                                     for s, i in zip(all_s, all_i, strict=True)], k)
    return classify_neighbors(best_s, train_y[best_i], test_y, ks, c, temperature, len(train_y))


def _read_meta(entry: Path) -> dict[str, Any]:
    try:
        meta = json.loads((entry / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise DinoevalError(f"{entry / 'meta.json'} cannot be read ({err}); extract the features "
                            "again") from None
    if not isinstance(meta, dict):
        raise DinoevalError(f"{entry / 'meta.json'} is not a feature-cache meta file")
    return meta


def _spec_hash(ckpt: str) -> str:
    """The ``ckpt_hash`` a backbone spec gets (a checkpoint file's is a hash of its bytes)."""
    from dinoeval.models.checkpoints import file_hash

    path = Path(ckpt)
    if path.is_file():
        return file_hash(path)
    raise DinoevalError(f"--ckpt {ckpt}: no such checkpoint file (knn-bank names rows after a "
                        "checkpoint file whose bytes match the features' checkpoint)")


def bank_context(train_meta: dict[str, Any], val_meta: dict[str, Any], *, n_train: int,
                 n_val: int, ckpt: str | None = None) -> Context:
    """The rows' context: what this run was given, checked against the two entries.

    The bank and the queries must come from one network and one feature kind (their
    ``meta["key"]`` says so). The backbone is ``ckpt`` when given: a file whose bytes hash to
    the entries' checkpoint hash (two copies of one file name each its own path), or the very
    spec that wrote the entries; otherwise the spec recorded in the entry (in a shared cache,
    whoever extracted those features first). Raises :class:`DinoevalError` on a mismatch.
    """
    tk, vk = train_meta.get("key") or {}, val_meta.get("key") or {}
    for what in ("network", "kind"):
        if tk.get(what) != vk.get(what):
            raise DinoevalError(
                f"the bank ({train_meta.get('backbone')}, {train_meta.get('kind')}) and the "
                f"queries ({val_meta.get('backbone')}, {val_meta.get('kind')}) come from "
                f"different {'networks' if what == 'network' else 'feature kinds'}; extract both "
                "with the same --ckpt, --checkpoint-key, --img-size and --feature")
    backbone = str(val_meta.get("backbone", ""))
    if ckpt is not None:
        have = str(val_meta.get("ckpt_hash", ""))
        if (Path(ckpt).is_file() or ckpt != backbone) and _spec_hash(ckpt) != have:
            raise DinoevalError(f"--ckpt {ckpt} is not the checkpoint these features were "
                                f"extracted from ({backbone}, hash {have}); pass that file or "
                                "a byte-identical copy")
        backbone = ckpt
    img_size = val_meta.get("img_size")
    return Context(backbone=backbone, ckpt_hash=str(val_meta.get("ckpt_hash", "")),
                   arch=str(val_meta.get("arch", "")), dataset=str(val_meta.get("dataset", "")),
                   split=str(val_meta.get("split", "")), feature=str(val_meta.get("kind", "")),
                   network=str(val_meta.get("network", "")),
                   resolution=resolution_text(img_size) if "img_size" in val_meta else "",
                   train_data=str(train_meta.get("source", "")), train_n=n_train,
                   data=str(val_meta.get("source", "")), data_n=n_val)


def run_knn_bank(train_dir: str | Path, val_dir: str | Path, *,
                 config: KnnConfig = KnnConfig(), bank: KnnBankConfig = KnnBankConfig(),
                 ckpt: str | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Out-of-core (or, under torchrun, distributed) k-NN of two feature-cache entries.

    Args:
        ckpt: the checkpoint the rows name (see :func:`bank_context`); default: the spec
            recorded in the entries.

    Returns:
        the results frame and facts about the run (seconds, blocks, world size).
    """
    import torch.distributed as dist

    t0 = time.perf_counter()
    train_e, val_e = find_entry(train_dir), find_entry(val_dir)  # missing inputs first
    train_meta, meta = _read_meta(train_e), _read_meta(val_e)
    train_y = load_npy(train_e / "labels.npy")
    val_y = load_npy(val_e / "labels.npy")
    ctx = bank_context(train_meta, meta, n_train=len(train_y), n_val=len(val_y), ckpt=ckpt)
    if max(config.ks) > len(train_y):
        raise DinoevalError(f"--k {max(config.ks)} is larger than the bank: {train_e} holds "
                            f"{len(train_y):,} features; use --k values <= {len(train_y)}")
    budget = working_budget(bank.max_memory)  # --max-memory bounds the whole process
    bank_path = bank_file(train_e, bank.bank_dtype)
    val_x = load_npy(val_e / "features.npy", mmap=True)
    reader = BankReader(bank_path)
    kw = dict(ks=config.ks, temperature=config.temperature, max_memory=budget,
              backend=bank.backend, device=bank.device)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        result = knn_classify_distributed(bank_path, train_y, np.asarray(val_x), val_y, **kw)
        world = dist.get_world_size()
    else:
        result = knn_classify_ooc(bank_path, train_y, np.asarray(val_x), val_y, **kw)
        world = 1
    plan = plan_blocks(-(-len(reader) // world), len(val_y), reader.dim, max(result.ks),
                       budget, itemsize=reader.dtype.itemsize, backend=bank.backend)
    seconds = time.perf_counter() - t0
    frame = to_frame(result.to_rows(per_class=config.per_class), ctx, seconds=seconds)
    return frame, {"seconds": seconds, "blocks": plan.n_blocks, "block_rows": plan.bank_rows,
                   "world_size": world, "bank": str(bank_path), "n_train": len(reader)}
