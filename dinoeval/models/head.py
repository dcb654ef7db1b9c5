"""The DINO projection head, with the official parameter names.

``mlp`` (Linear-GELU-Linear-GELU-Linear to the bottleneck) -> L2-normalise -> a weight-normalised
linear layer to K prototypes with no bias. The weight-norm is written out by hand so the state
dict keys are the official ``last_layer.weight_g`` / ``last_layer.weight_v`` on every torch version.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class WeightNormLinear(nn.Module):
    """``y = x @ (g * v / ||v||)^T`` with ``g: (out, 1)``, ``v: (out, in)``, no bias.

    ``v`` starts at PyTorch's default ``nn.Linear`` initialisation (Kaiming-uniform with
    ``a = sqrt(5)``, i.e. U(-1/sqrt(in), 1/sqrt(in))) and ``g`` at 1, as the official DINO head's
    ``weight_norm(nn.Linear(bottleneck, K, bias=False))`` with ``weight_g`` filled with 1.
    """

    def __init__(self, in_dim: int, out_dim: int, *, freeze_norm: bool = True) -> None:
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))  # nn.Linear.reset_parameters
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1), requires_grad=not freeze_norm)

    @property
    def weight(self) -> torch.Tensor:
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO head: ``(B, in_dim) -> (B, out_dim)`` prototype logits.

    Initialisation as the official ``DINOHead``: MLP weights trunc_normal(std 0.02), biases 0;
    the last layer PyTorch's default (see :class:`WeightNormLinear`). With the same seed the
    parameters equal the official head's bit for bit.

    Args:
        in_dim: backbone width.
        out_dim: number of prototypes K.
        hidden_dim: MLP width (2048 in the paper).
        bottleneck_dim: width before the prototypes (256 in the paper).
        nlayers: MLP depth (3 in the paper).
        use_bn: BatchNorm in the MLP (off for ViTs in the paper).
        norm_last_layer: freeze the weight-norm magnitude ``g`` at 1 (the paper's default).
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        nlayers = max(nlayers, 1)
        layers: list[nn.Module] = []
        if nlayers == 1:
            layers.append(nn.Linear(in_dim, bottleneck_dim))
        else:
            dims = [in_dim] + [hidden_dim] * (nlayers - 1)
            for a, b in itertools.pairwise(dims):
                layers.append(nn.Linear(a, b))
                if use_bn:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(nn.GELU())
            layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        self.apply(self._init_weights)
        # After the trunc-normal init of the MLP, as in the official head: the prototypes keep
        # PyTorch's default Linear init (trunc_normal(0.02) made them move ~1.8x faster at first)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim, freeze_norm=norm_last_layer)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, bottleneck_dim)``, L2-normalised (the input to the prototypes)."""
        return F.normalize(self.mlp(x), dim=-1, p=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(self.bottleneck(x))


def head_from_state_dict(state: dict[str, torch.Tensor]) -> DINOHead:
    """Rebuild a :class:`DINOHead` whose shapes match ``state`` (keys without the ``head.``).

    An official ``nlayers=1`` head stores its MLP as a bare ``nn.Linear`` (``mlp.weight``,
    ``mlp.bias``); it is read as this class's one-layer ``mlp.0``.

    Raises:
        ValueError: the tensors are not a DINO head (no ``mlp`` linear layer or ``last_layer``).
    """
    state = {("mlp.0." + k[4:] if k in ("mlp.weight", "mlp.bias") else k): v
             for k, v in state.items()}
    linear_idx = sorted(int(k.split(".")[1]) for k in state if k.startswith("mlp.")
                        and k.endswith(".weight") and state[k].ndim == 2)
    if not linear_idx or not any(k.startswith("last_layer.") for k in state):
        raise ValueError(f"not a DINO head: keys {sorted(state)[:6]}")
    use_bn = any(k.startswith("mlp.") and k.endswith("running_mean") for k in state)
    first = state[f"mlp.{linear_idx[0]}.weight"]
    last = state[f"mlp.{linear_idx[-1]}.weight"]
    if "last_layer.weight_v" in state:
        out_dim = state["last_layer.weight_v"].shape[0]
    else:  # parametrized weight norm from newer torch
        out_dim = state["last_layer.parametrizations.weight.original1"].shape[0]
    hidden = first.shape[0] if len(linear_idx) > 1 else 2048
    head = DINOHead(first.shape[1], out_dim, hidden_dim=hidden, bottleneck_dim=last.shape[0],
                    nlayers=len(linear_idx), use_bn=use_bn)
    state = {
        k.replace("parametrizations.weight.original0", "weight_g")
        .replace("parametrizations.weight.original1", "weight_v"): v
        for k, v in state.items()
    }
    head.load_state_dict(state)
    return head
