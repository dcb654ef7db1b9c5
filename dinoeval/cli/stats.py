"""``dinoeval linear``, ``dinoeval clusters`` and ``dinoeval collapse-stats``."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer

from dinoeval.cli._common import CkptOpt, OutOpt, run_each
from dinoeval.cli._options import Group, with_options
from dinoeval.eval.linear import LinearProbeConfig
from dinoeval.features import FEATURE_KINDS
from dinoeval.pipeline import BackboneOptions, ClusterConfig, CollapseConfig, ExtractOptions


@with_options(config=LinearProbeConfig, extract=ExtractOptions, backbone=BackboneOptions)
def linear(
    ckpt: CkptOpt,
    train: Annotated[str, typer.Option(help="Train data (fit and select), e.g. "
                                            "fashion-mnist:train.")],
    val: Annotated[str, typer.Option(help="Test data (reported only), e.g. fashion-mnist:test.")],
    out: OutOpt = None,
    *, config: LinearProbeConfig, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """Linear-probe accuracy on cached features (DINOv2 protocol), one or more backbones.

    The setting (learning rate and weight decay, or C) is chosen on a held-out split of the
    TRAIN data, refit on all of it, and only then scored on --val. Example:

      dinoeval linear --ckpt runs/fm/checkpoint.pth --ckpt pixels
      --train fashion-mnist:train --val fashion-mnist:test --feature cls-last4
    """
    from dinoeval.pipeline import run_linear

    run_each(ckpt, out, f"linear probe ({config.mode})",
             lambda spec, pf: run_linear(spec, train, val, backbone_opts=backbone,
                                         extract_opts=extract, config=config, progress=pf),
             data=(train, val), backbone=backbone, extract=extract, linear=config)


@with_options(config=ClusterConfig, extract=ExtractOptions, backbone=BackboneOptions)
def clusters(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(help="Labelled data to cluster, e.g. fashion-mnist:test.")],
    out: OutOpt = None,
    *, config: ClusterConfig, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """k-means clustering of the features on all samples: NMI, ARI, matched accuracy, purity,
    silhouette. Example:

      dinoeval clusters --ckpt runs/fm/checkpoint.pth --data fashion-mnist:test --spherical
    """
    from dinoeval.pipeline import run_clusters

    run_each(ckpt, out, "clustering",
             lambda spec, pf: run_clusters(spec, data, backbone_opts=backbone,
                                           extract_opts=extract, config=config, progress=pf),
             data=(data,), backbone=backbone, extract=extract, clusters=config)


@with_options(config=CollapseConfig, extract=Group(ExtractOptions, skip=("feature",)),
              backbone=BackboneOptions)
def collapse_stats(
    ckpt: CkptOpt,
    data: Annotated[str, typer.Option(help="Data to measure on, e.g. fashion-mnist:train.")],
    feature: Annotated[list[str] | None, typer.Option(
        "--feature", help="Backbone feature kinds; repeat to measure several (default cls): "
                          f"{' | '.join(k for k in FEATURE_KINDS if k != 'patch')}.")] = None,
    out: OutOpt = None,
    *, config: CollapseConfig, extract: ExtractOptions, backbone: BackboneOptions,
) -> None:
    """Has the representation collapsed? SSL collapse (RankMe, alpha-ReQ, normalised std,
    alignment, uniformity, DINO teacher entropy and KL) and neural collapse (NC1-NC4), in one
    table; side by side with repeated --ckpt. Example:

      dinoeval collapse-stats --ckpt runs/fm/checkpoint.pth --ckpt random:vit_tiny_p4_28
      --data fashion-mnist:train
    """
    from dinoeval.cli._common import user_errors
    from dinoeval.pipeline import run_collapse_stats_kinds

    with user_errors():
        kinds = [replace(extract, feature=kind) for kind in dict.fromkeys(feature or ["cls"])]
    run_each(ckpt, out, "collapse statistics",
             lambda spec, pf: run_collapse_stats_kinds(spec, data, backbone_opts=backbone,
                                                       extract_opts=kinds, config=config,
                                                       progress=pf),
             data=(data,), backbone=backbone, extract=kinds, collapse=config)


def register(app: typer.Typer) -> None:
    app.command("linear")(linear)
    app.command("clusters")(clusters)
    app.command("collapse-stats")(collapse_stats)
