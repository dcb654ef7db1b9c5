"""The DINO head's initialisation equals the official ``DINOHead``'s."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from dinoeval.models import DINOHead


def official_head(in_dim: int, out_dim: int, hidden: int, bottleneck: int, nlayers: int
                  ) -> tuple[nn.Module, nn.Module]:
    """The official head's structure and init order: an MLP of ``nn.Linear`` + GELU, then
    trunc_normal(0.02) / zero bias on every Linear, then a weight-normalised default-initialised
    ``nn.Linear(bottleneck, K, bias=False)`` with ``weight_g`` filled with 1."""
    dims = [in_dim] + [hidden] * (nlayers - 1)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(dims):
        layers += [nn.Linear(a, b), nn.GELU()]
    layers.append(nn.Linear(dims[-1], bottleneck))
    mlp = nn.Sequential(*layers)
    for m in mlp.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    last = nn.utils.parametrizations.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
    with torch.no_grad():
        last.parametrizations.weight.original0.fill_(1)
    return mlp, last


@pytest.mark.parametrize("nlayers", [3, 2])
def test_head_init_equals_the_official_head_bit_for_bit(nlayers: int) -> None:
    torch.manual_seed(123)
    ours = DINOHead(48, 96, hidden_dim=64, bottleneck_dim=32, nlayers=nlayers)
    torch.manual_seed(123)
    mlp, last = official_head(48, 96, 64, 32, nlayers)
    for (name, a), b in zip(ours.mlp.state_dict().items(), mlp.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    torch.testing.assert_close(ours.last_layer.weight_v.detach(),
                               last.parametrizations.weight.original1.detach(), rtol=0, atol=0)
    torch.testing.assert_close(ours.last_layer.weight_g.detach(), torch.ones(96, 1))
    assert not ours.last_layer.weight_g.requires_grad  # norm_last_layer=True freezes g
    x = torch.randn(5, 48)
    torch.testing.assert_close(ours(x), last(nn.functional.normalize(mlp(x), dim=-1)))


def test_last_layer_is_default_linear_init_not_trunc_normal() -> None:
    torch.manual_seed(0)
    v = DINOHead(16, 4096, hidden_dim=32, bottleneck_dim=256).last_layer.weight_v.detach()
    bound = 1 / math.sqrt(256)  # U(-1/sqrt(in), 1/sqrt(in))
    assert float(v.abs().max()) <= bound
    assert float(v.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)  # 0.036, not 0.02
