"""``dinoeval extract-sharded`` (under torchrun) and ``dinoeval knn-bank`` (banks larger than memory).

Under ``torchrun --nproc_per_node N``, both commands join the process group that torchrun set up
(``gloo`` on CPU, ``nccl`` on CUDA; each rank uses ``cuda:$LOCAL_RANK``); the runner is
:mod:`dinoeval.pipeline.knn_bank`.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from dinoeval.cli._common import (
    OutOpt,
    check_out,
    parse_ckpt,
    print_results,
    progress_factory,
    say,
    user_errors,
    with_label,
    write_results,
)
from dinoeval.cli._options import Group, with_options
from dinoeval.cli.knn import CacheDirOutOpt, OldCacheOutOpt, OneCkptOpt, cache_dir_given
from dinoeval.errors import DinoevalError
from dinoeval.pipeline import BackboneOptions, ExtractOptions, KnnConfig
from dinoeval.pipeline.knn_bank import KnnBankConfig


@with_options(extract=Group(ExtractOptions, skip=("cache_dir",)), backbone=BackboneOptions)
def extract_sharded(
    ckpt: OneCkptOpt,
    data: Annotated[str, typer.Option(help="Data spec, e.g. imagefolder:/data/train.")],
    cache_dir: CacheDirOutOpt = None,
    old_out: OldCacheOutOpt = None,
    rank: Annotated[int | None, typer.Option(
        help="Extract only this shard (without torchrun); default: torchrun's RANK.")] = None,
    world_size: Annotated[int | None, typer.Option(
        help="Number of shards (without torchrun); default: torchrun's WORLD_SIZE.")] = None,
    *, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """Extract features with one exact shard per rank, then merge them into the cache.

    Run under torchrun (each rank one shard; rank 0 merges), or shard by hand with --rank and
    --world-size (the call that completes the set merges). Rerunning extracts only missing shards.
    On CUDA use --precision bf16 and a large --batch-size. Example:

      torchrun --nproc_per_node 8 -m dinoeval extract-sharded --ckpt dino.pth
      --data imagefolder:/data/imagenet/train --cache-dir feats/ --device cuda --precision bf16
      --batch-size 512
    """
    from dinoeval.data import get_source
    from dinoeval.features.sharded import extract_sharded as run
    from dinoeval.features.sharded import shard_bounds
    from dinoeval.pipeline.knn_bank import init_distributed

    with user_errors():
        out = cache_dir_given(cache_dir, old_out)
        _, ckpt = parse_ckpt(ckpt)  # a label names the backbone, never the cache entry
        if (rank is None) != (world_size is None):
            raise DinoevalError("give both --rank and --world-size, or neither (under torchrun)")
        backbone.check_specs([ckpt])
        from dinoeval.checks import check_output_dir

        check_output_dir(out)
        device = extract.device
        created, in_group = False, False
        if rank is None:
            rank, world_size, device, created = init_distributed(device)
            in_group = world_size > 1
            if not in_group:
                rank = None  # plain single process: one shard, merged at once
                world_size = None
        source = get_source(data)
        model = backbone.load(ckpt)
        total = len(source)
        if world_size is not None:
            lo, hi = shard_bounds(len(source), rank, world_size, extract.batch_size)
            total = hi - lo
        try:
            with progress_factory() as pf:
                fs = run(model, source, cache_dir=out, rank=rank, world_size=world_size,
                         kind=extract.feature, batch_size=extract.batch_size, device=device,
                         num_workers=extract.num_workers,
                         skip_bad_images=extract.skip_bad_images, precision=extract.precision,
                         progress=pf(f"{model.name} on {source.spec} (shard {rank or 0})",
                                     total))
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()
        if in_group and rank != 0:  # rank 0 reports for the group
            return
        if fs is None:
            say(f"shard {rank} of {world_size} written to {out}; not merged yet: run the other "
                "ranks with the same settings (the call that completes the set merges them)",
                "yellow")
        else:
            say(f" -> {out}", lead=f"{len(fs)} x {tuple(fs.features.shape[1:])} features",
                lead_style="green")


@with_options(config=Group(KnnConfig, skip=("per_class",)), bank=KnnBankConfig)
def knn_bank(
    train_feats: Annotated[Path, typer.Option(help="Feature cache (entry) of the train bank.")],
    val_feats: Annotated[Path, typer.Option(help="Feature cache (entry) of the queries.")],
    out: OutOpt = None,
    label: Annotated[str, typer.Option(
        help="Name of the backbone in tables, plots and reports (default: its spec).")] = "",
    ckpt: Annotated[str | None, typer.Option(
        "--ckpt", "-c", help="The checkpoint file the features came from, as the rows should "
        "name it (checked against the features' checkpoint hash). Default: the spec that "
        "extracted them (in a shared cache, whoever did first).")] = None,
    *, config: KnnConfig, bank: KnnBankConfig,
) -> None:
    """Weighted k-NN over a train bank read in memory-bounded blocks (exact).

    Features come from `dinoeval extract --cache-dir DIR` (or extract-sharded). Under torchrun the bank
    is split across ranks and the partial top-k lists merged. Example:

      dinoeval knn-bank --train-feats feats/train --val-feats feats/val --max-memory 1GB --k 20
    """
    from dinoeval.pipeline.knn_bank import init_distributed, run_knn_bank

    with user_errors():
        check_out(out)
        rank, _, device, created = init_distributed(bank.device)
        try:
            frame, facts = run_knn_bank(train_feats, val_feats, config=config,
                                        bank=replace(bank, device=device), ckpt=ckpt)
        finally:
            if created:
                import torch.distributed as dist

                dist.destroy_process_group()
        if rank != 0:  # every rank has the result; one writes it
            return
        say(f"{facts['n_train']} bank rows in {facts['blocks']} block(s) of "
            f"{facts['block_rows']} per rank x {facts['world_size']} rank(s), "
            f"{facts['seconds']:.1f} s", "dim")
        frame = with_label(frame, label.strip())
        write_results(frame, out)
        if out is not None:
            from dinoeval.pipeline import save_config

            save_config(out, knn=config, bank=bank, train_feats=str(train_feats),
                        val_feats=str(val_feats), ckpt=ckpt, device=device)
        print_results(frame, title=f"k-NN accuracy (bank {bank.bank_dtype})")


def register(app: typer.Typer) -> None:
    app.command("extract-sharded")(extract_sharded)
    app.command("knn-bank")(knn_bank)
