"""Features from a ``torch.nn.Module`` held in memory (a notebook, a training loop).

The contract for a model passed in by object: ``model(x)`` on a ``(B, 3, H, W)`` float batch
(already transformed) returns one of

* a ``(B, D)`` tensor: the CLS (or pooled) embedding, used as is;
* a ``(B, T, D)`` tensor of tokens: token 0 is the CLS token, tokens ``1 + R:`` are patch tokens
  (``R`` registers, see :func:`cls_and_patches`);
* a dict with DINOv2's ``forward_features`` keys: ``x_norm_clstoken`` (``(B, D)``) and
  ``x_norm_patchtokens`` (``(B, P, D)``);
* a tuple or list whose first element is one of the above (e.g. ``(cls, attentions)``).

Anything else raises :class:`~dinoeval.errors.DinoevalError` naming the shape it got. A model
whose ``forward`` returns logits should be passed as its backbone (``model.backbone``), or with
``features=lambda m, x: m.forward_features(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from dinoeval.errors import DinoevalError

Forward = Callable[[torch.nn.Module, torch.Tensor], Any]


def cls_and_patches(output: Any, *, num_registers: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(CLS (B, D), patch tokens (B, P, D) or None)`` from a model's output (see the module
    docstring for what is accepted)."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    if isinstance(output, dict):
        if "x_norm_clstoken" in output:
            return output["x_norm_clstoken"], output.get("x_norm_patchtokens")
        raise DinoevalError(f"the model returned a dict with keys {sorted(output)}; expected "
                            "DINOv2's x_norm_clstoken (and x_norm_patchtokens)")
    if not isinstance(output, torch.Tensor):
        raise DinoevalError(f"the model returned {type(output).__name__}; expected a (B, D) "
                            "CLS tensor or (B, T, D) tokens")
    if output.ndim == 2:
        return output, None
    if output.ndim == 3:
        return output[:, 0], output[:, 1 + num_registers:]
    raise DinoevalError(f"the model returned a tensor of shape {tuple(output.shape)}; expected "
                        "(B, D) CLS features or (B, T, D) tokens with the CLS token first")


Batches = tuple[torch.Tensor, Any] | Iterable[tuple[torch.Tensor, Any]]


def _batches(data: Batches, batch_size: int) -> Iterable[tuple[torch.Tensor, np.ndarray]]:
    """``(images, labels)`` batches from a pair of tensors or an iterable of pairs."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        y = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if len(x) != len(y):
            raise DinoevalError(f"{len(x)} images but {len(y)} labels")
        for i in range(0, len(x), batch_size):
            yield x[i:i + batch_size], y[i:i + batch_size]
        return
    for batch in data:
        x, y = batch[0], batch[1]
        yield x, np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)


@torch.no_grad()
def module_features(model: torch.nn.Module, data: Batches, *, device: str | torch.device = "cpu",
                    batch_size: int = 256, forward: Forward | None = None,
                    num_registers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CLS features ``(N, D)`` float32 and labels ``(N,)`` int64 of ``model`` on ``data``.

    Args:
        model: any module honouring the contract above; put in eval mode for the pass and
            restored to its previous mode after.
        data: ``(images (N, 3, H, W) float, labels (N,))`` already transformed, or an iterable
            of such batches (a ``DataLoader``).
        forward: ``forward(model, x)`` instead of ``model(x)`` (e.g. a hook or
            ``forward_features``).
    """
    was_training = model.training
    model.eval()
    feats, labels = [], []
    try:
        for x, y in _batches(data, batch_size):
            out = forward(model, x.to(device)) if forward is not None else model(x.to(device))
            cls, _ = cls_and_patches(out, num_registers=num_registers)
            feats.append(cls.float().cpu().numpy())
            labels.append(y.astype(np.int64))
    finally:
        model.train(was_training)
    if not feats:
        raise DinoevalError("no images: the data gave no batch")
    return np.concatenate(feats), np.concatenate(labels)
