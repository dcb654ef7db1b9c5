"""DINO ResNet-50 (the DINO paper's ResNet row): torchvision ``resnet50`` key names, features are
the global-average-pooled last stage (2048-d for ResNet-50), as in DINO's ``eval_knn.py`` /
``eval_linear.py`` where ``fc`` is replaced by the identity.

Any torchvision ResNet layout is read: bottleneck blocks when ``layer1.0.conv3`` exists, blocks per
stage counted from the keys, the stem's input channels from ``conv1.weight``. ``fc.*`` (a
supervised classifier) is ignored. No attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from dinoeval.models.dinov3 import load_strict
from dinoeval.models.registry import Adapter, Arch, BuildOptions, Built, Family, register_family

if TYPE_CHECKING:
    from dinoeval.models.checkpoints import RawCheckpoint


class ResNetAdapter(Adapter):
    """Token 0 is the global average pool of ``layer4``; then its ``h*w`` positions (the patch
    tokens of ``--feature patch``/``cls+avgpool``), row-major, un-normalised."""

    no_attention = "a ResNet has no self-attention"
    max_blocks = 1

    def depth(self, model: nn.Module) -> int:
        return 1

    def tokens(self, model: nn.Module, x: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        grid = x.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return [torch.cat([grid.mean(1, keepdim=True), grid], dim=1)]


RESNET_ADAPTER = ResNetAdapter()


def _stage_blocks(state: Mapping[str, torch.Tensor], stage: int) -> int:
    return 1 + max(int(k.split(".")[1]) for k in state if k.startswith(f"layer{stage}."))


def _build_resnet(state: dict[str, torch.Tensor], raw: RawCheckpoint, opts: BuildOptions) -> Built:
    from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

    bottleneck = "layer1.0.conv3.weight" in state
    layers = [_stage_blocks(state, s) for s in (1, 2, 3, 4)]
    width = int(state["layer1.0.conv1.weight"].shape[0]) if bottleneck else 64
    model = ResNet(Bottleneck if bottleneck else BasicBlock, layers, width_per_group=width)
    in_chans = int(state["conv1.weight"].shape[1])
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    model.fc = nn.Identity()
    ignored = sorted(k for k in state if k.startswith("fc."))
    load_strict(model, {k: v for k, v in state.items() if not k.startswith("fc.")}, "ResNet")
    model.eval()
    depth = sum(layers) * (3 if bottleneck else 2) + 2
    dim = int(state[f"layer4.{layers[3] - 1}.{'bn3' if bottleneck else 'bn2'}.weight"].shape[0])
    wide = "" if width == 64 else f"-w{width}"
    arch = Arch(name=f"ResNet-{depth}{wide}", embed_dim=dim, depth=depth, patch_size=32,
                img_size=(224, 224), in_chans=in_chans)
    notes = [f"ignored the classifier {', '.join(ignored)}"] if ignored else []
    return Built(model=model, arch=arch, adapter=RESNET_ADAPTER, notes=notes,
                 eval_size=(224, 224))


register_family(Family(
    name="resnet",
    summary="DINO ResNet-50 (torchvision keys; global-average-pooled 2048-d features)",
    matches=lambda state, raw: "conv1.weight" in state and "layer4.0.conv1.weight" in state
    and "bn1.weight" in state,
    build=_build_resnet,
    native="any (fully convolutional)", evaluation="224 px (the DINO protocol)",
    resampling="none",
    order=40,
))
