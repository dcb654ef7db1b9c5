"""``dinoeval extract-sharded`` (under torchrun) and ``dinoeval knn-bank`` (banks larger than memory).

Under ``torchrun --nproc_per_node N``, both commands join the process group that torchrun set up
(``gloo`` on CPU, ``nccl`` on CUDA; each rank uses ``cuda:$LOCAL_RANK``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from dinoeval.cli._common import (
    BatchSizeOpt,
    CheckpointKeyOpt,
    DeviceOpt,
    FeatureOpt,
    ImgSizeOpt,
    NumHeadsOpt,
    OutOpt,
    PixelSizeOpt,
    PrecisionOpt,
    SkipBadOpt,
    WeightsOpt,
    WorkersOpt,
    backbone_options,
    check_out,
    console,
    print_results,
    progress_factory,
    user_errors,
    write_results,
)
from dinoeval.errors import DinoevalError

# ---------------------------------------------------------------------------------------------
# Runners (IO): process group, cache entries


def init_distributed(device: str) -> tuple[int, int, str, bool]:
    """Join torchrun's process group when ``WORLD_SIZE > 1``.

    Returns:
        rank, world size, this rank's device, and whether this call created the group.
    """
    import torch.distributed as dist

    from dinoeval.checks import check_device

    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.startswith("cuda") and ":" not in device and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    if dist.is_available() and dist.is_initialized():  # a group set up by the caller
        return dist.get_rank(), dist.get_world_size(), device, False
    if world <= 1:
        return 0, 1, device, False
    if device.startswith("cuda"):
        import torch

        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, True


def find_entry(path: str | Path) -> Path:
    """A feature-cache entry: ``path`` itself (it has ``meta.json``) or its only complete entry."""
    path = Path(path)
    if (path / "meta.json").exists():
        return path
    if not path.is_dir():
        raise DinoevalError(f"feature directory {path} not found; write one with dinoeval extract "
                            "--out DIR")
    entries = sorted(p for p in path.iterdir() if (p / "meta.json").exists()
                     and json.loads((p / "meta.json").read_text()).get("complete"))
    if len(entries) != 1:
        names = ", ".join(p.name for p in entries) or "none"
        raise DinoevalError(f"{path} holds {len(entries)} complete feature entries ({names}); "
                            "pass the entry directory itself")
    return entries[0]


def bank_file(entry: Path, dtype: str) -> Path:
    """``features.npy``, or a ``features.<dtype>.npy`` copy written once (L2-normalised)."""
    from dinoeval.eval.knn_ooc import BANK_DTYPES, write_bank

    if dtype not in BANK_DTYPES:
        raise DinoevalError(f"--bank-dtype must be one of {', '.join(BANK_DTYPES)}, got {dtype!r}")
    src = entry / "features.npy"
    if dtype == "float32":
        return src
    out = entry / f"features.{dtype}.npy"
    if not out.exists():
        write_bank(src, out, dtype)
    return out


def _load_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """``np.load`` with a one-line error naming a missing, truncated or corrupt file."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise DinoevalError(f"{path} is missing; extract the features again") from None
    except (OSError, ValueError) as err:
        raise DinoevalError(f"{path} is truncated or corrupt ({err}); extract the features "
                            "again") from None


def run_knn_bank(train_dir: str | Path, val_dir: str | Path, *, ks: tuple[int, ...],
                 temperature: float, max_memory: str, bank_dtype: str, backend: str,
                 device: str) -> tuple[Any, dict[str, Any]]:
    """Out-of-core (or, under torchrun, distributed) k-NN of two feature-cache entries.

    Returns:
        the results frame and facts about the run (seconds, blocks, world size).
    """
    import torch.distributed as dist

    from dinoeval.eval.knn_ooc import (
        BankReader,
        knn_classify_distributed,
        knn_classify_ooc,
        plan_blocks,
        working_budget,
    )
    from dinoeval.results import Context, to_frame

    t0 = time.perf_counter()
    train_e, val_e = find_entry(train_dir), find_entry(val_dir)  # missing inputs first
    budget = working_budget(max_memory)  # --max-memory bounds the whole process
    meta = json.loads((val_e / "meta.json").read_text())
    bank = bank_file(train_e, bank_dtype)
    train_y = _load_npy(train_e / "labels.npy")
    val_x = _load_npy(val_e / "features.npy", mmap=True)
    val_y = _load_npy(val_e / "labels.npy")
    reader = BankReader(bank)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        result = knn_classify_distributed(bank, train_y, np.asarray(val_x), val_y, ks=ks,
                                          temperature=temperature, max_memory=budget,
                                          backend=backend, device=device)
        world = dist.get_world_size()
    else:
        result = knn_classify_ooc(bank, train_y, np.asarray(val_x), val_y, ks=ks,
                                  temperature=temperature, max_memory=budget,
                                  backend=backend, device=device)
        world = 1
    plan = plan_blocks(-(-len(reader) // world), len(val_y), reader.dim, max(result.ks),
                       budget, itemsize=reader.dtype.itemsize, backend=backend)
    ctx = Context(backbone=str(meta.get("backbone", "")), ckpt_hash=str(meta.get("ckpt_hash", "")),
                  arch=str(meta.get("arch", "")), dataset=str(meta.get("dataset", "")),
                  split=str(meta.get("split", "")), feature=str(meta.get("kind", "")))
    seconds = time.perf_counter() - t0
    frame = to_frame(result.to_rows(), ctx, seconds=seconds)
    return frame, {"seconds": seconds, "blocks": plan.n_blocks, "block_rows": plan.bank_rows,
                   "world_size": world, "bank": str(bank), "n_train": len(reader)}


# ---------------------------------------------------------------------------------------------
# Commands


def extract_sharded(
    ckpt: Annotated[str, typer.Option("--ckpt", "-c", help="Backbone spec (see dinoeval --help).")],
    data: Annotated[str, typer.Option(help="Data spec, e.g. imagefolder:/data/train.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature cache directory.")],
    rank: Annotated[int | None, typer.Option(
        help="Extract only this shard (without torchrun); default: torchrun's RANK.")] = None,
    world_size: Annotated[int | None, typer.Option(
        help="Number of shards (without torchrun); default: torchrun's WORLD_SIZE.")] = None,
    feature: FeatureOpt = "cls",
    checkpoint_key: CheckpointKeyOpt = "teacher",
    weights: WeightsOpt = None,
    img_size: ImgSizeOpt = None,
    num_heads: NumHeadsOpt = None,
    pixel_size: PixelSizeOpt = None,
    batch_size: BatchSizeOpt = 128,
    device: DeviceOpt = "cpu",
    workers: WorkersOpt = 0,
    precision: PrecisionOpt = "fp32",
    skip_bad_images: SkipBadOpt = False,
) -> None:
    """Extract features with one exact shard per rank, then merge them into the cache.

    Run under torchrun (each rank one shard; rank 0 merges), or shard by hand with --rank and
    --world-size (the call that completes the set merges). Rerunning extracts only missing shards.
    On CUDA use --precision bf16 and a large --batch-size. Example:

      torchrun --nproc_per_node 8 $(which dinoeval) extract-sharded --ckpt dino.pth
      --data imagefolder:/data/imagenet/train --out feats/ --device cuda --precision bf16
      --batch-size 512
    """
    from dinoeval.data import get_source
    from dinoeval.features.sharded import extract_sharded as run
    from dinoeval.features.sharded import shard_bounds

    with user_errors():
        if (rank is None) != (world_size is None):
            raise DinoevalError("give both --rank and --world-size, or neither (under torchrun)")
        bopts = backbone_options(checkpoint_key, weights, img_size, num_heads, pixel_size,
                                 ckpts=[ckpt])
        created, in_group = False, False
        if rank is None:
            rank, world_size, device, created = init_distributed(device)
            in_group = world_size > 1
            if not in_group:
                rank = None  # plain single process: one shard, merged at once
                world_size = None
        source = get_source(data)
        backbone = bopts.load(ckpt)
        total = len(source)
        if world_size is not None:
            lo, hi = shard_bounds(len(source), rank, world_size, batch_size)
            total = hi - lo
        try:
            with progress_factory() as pf:
                fs = run(backbone, source, cache_dir=out, rank=rank, world_size=world_size,
                         kind=feature, batch_size=batch_size, device=device, num_workers=workers,
                         skip_bad_images=skip_bad_images, precision=precision,
                         progress=pf(f"{backbone.name} on {source.spec} (shard {rank or 0})",
                                     total))
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()
        if in_group and rank != 0:  # rank 0 reports for the group
            return
        if fs is None:
            console.print(f"[yellow]shard {rank} of {world_size} written; waiting for the other "
                          "shards before merging[/]")
        else:
            console.print(f"[green]{len(fs)} x {tuple(fs.features.shape[1:])} features[/] -> "
                          f"{out}")


def knn_bank(
    train_feats: Annotated[Path, typer.Option(help="Feature cache (entry) of the train bank.")],
    val_feats: Annotated[Path, typer.Option(help="Feature cache (entry) of the queries.")],
    max_memory: Annotated[str, typer.Option(
        help="Peak memory of this process, e.g. 1GB: what torch/faiss already hold is subtracted "
        "and the rest sizes the bank blocks.")] = "1GB",
    k: Annotated[list[int] | None, typer.Option(
        "--k", help="Neighbour counts; repeat (default 10 20 100 200).")] = None,
    temperature: Annotated[float, typer.Option(help="Vote weight exp(sim/T).")] = 0.07,
    bank_dtype: Annotated[str, typer.Option(
        help="Bank storage: float32 (exact), float16 or bfloat16 (a normalised copy is written "
        "once beside features.npy).")] = "float32",
    backend: Annotated[str, typer.Option(help="faiss (CPU) or torch (any --device).")] = "faiss",
    device: DeviceOpt = "cpu",
    out: OutOpt = None,
) -> None:
    """Weighted k-NN over a train bank read in memory-bounded blocks (exact).

    Features come from `dinoeval extract --out DIR` (or extract-sharded). Under torchrun the bank
    is split across ranks and the partial top-k lists merged. Example:

      dinoeval knn-bank --train-feats feats/train --val-feats feats/val --max-memory 1GB --k 20
    """
    from dinoeval.eval.knn import DEFAULT_KS

    with user_errors():
        check_out(out)
        rank, _, device, created = init_distributed(device)
        try:
            frame, facts = run_knn_bank(train_feats, val_feats, ks=tuple(k) if k else DEFAULT_KS,
                                        temperature=temperature, max_memory=max_memory,
                                        bank_dtype=bank_dtype, backend=backend, device=device)
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()
        if rank != 0:  # every rank has the result; one writes it
            return
        console.print(f"[dim]{facts['n_train']} bank rows in {facts['blocks']} block(s) of "
                      f"{facts['block_rows']} per rank x {facts['world_size']} rank(s), "
                      f"{facts['seconds']:.1f} s[/]")
        write_results(frame, out)
        print_results(frame, title=f"k-NN accuracy (bank {bank_dtype})")


def register(app: typer.Typer) -> None:
    app.command("extract-sharded")(extract_sharded)
    app.command("knn-bank")(knn_bank)


if __name__ == "__main__":  # torchrun -m dinoeval.cli.scale extract-sharded ...
    from dinoeval.cli import app as _app

    _app()
