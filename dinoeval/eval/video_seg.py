"""Video object segmentation by label propagation on patch features (DINO's DAVIS protocol).

The protocol of DINO's ``eval_video_segmentation.py`` (Caron et al., ICCV 2021, Sec. 4.2.2; the
propagation follows Jabri et al., "Space-Time Correspondence as a Contrastive Random Walk", 2020):

1. Every frame is resized (short side 480, long side floored to a multiple of 64) and encoded;
   its last-block patch tokens (after the final norm) are L2-normalised: ``(h, w, D)``.
2. The first frame's labels, resized to the patch grid (nearest), are one-hot: ``(C, h, w)``.
3. For each later frame, the context is the first frame and the ``n_last_frames`` (7) previous
   frames with their *soft* propagated labels. Each target patch ``t`` takes as sources the
   context patches ``s`` within ``radius`` (12) patches in both grid directions (a square window),
   the affinity is ``exp(<f_t, f_s> / temperature)`` (0.1), only its ``topk`` (5) largest sources
   over all context frames are kept, and the target's label is their affinity-weighted average,
   normalised to sum to one. That is a softmax at temperature 0.1 over the top-k cosine
   similarities, which is how it is computed here (shifting by the maximum cannot overflow).
4. The soft labels are upsampled bilinearly by the patch size, each channel min-max normalised
   (where its maximum is positive), arg-maxed, and resized (nearest) to the original frame size.

Memory: the official script builds an ``(h w) x (h w)`` neighbourhood mask and a dense affinity
per context frame. :func:`propagate` instead works on square tiles of target patches, each
against only the source window its neighbourhood can reach, so memory is
``O(n_context * tile^2 * (tile + 2 radius)^2)`` whatever the frame size, and each frame's
features are computed once and kept for as long as the frame stays in the context.
Ties at the k-th largest affinity: the official script keeps every tied source, this keeps
exactly ``topk`` (a difference only for exactly equal similarities).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dinoeval.errors import DinoevalError


@dataclass(frozen=True, kw_only=True)
class PropagationConfig:
    """Label-propagation settings (defaults: DINO's ``eval_video_segmentation.py``).

    Attributes:
        n_last_frames: previous frames in the context besides the first (``--n_last_frames`` 7).
        topk: sources kept per target patch (``--topk`` 5).
        temperature: affinity ``exp(sim / temperature)`` (0.1, fixed in the official script).
        radius: neighbourhood half-width in patches (``--size_mask_neighborhood`` 12); 0 = the
            whole frame.
        tile: target tile side in patches (memory/speed only, the result does not depend on it).
    """

    n_last_frames: int = 7
    topk: int = 5
    temperature: float = 0.1
    radius: int = 12
    tile: int = 16

    def __post_init__(self) -> None:
        if self.n_last_frames < 0:
            raise DinoevalError(f"--n-last-frames must be >= 0, got {self.n_last_frames}")
        if self.topk < 1:
            raise DinoevalError(f"--topk must be >= 1, got {self.topk}")
        if not self.temperature > 0:
            raise DinoevalError(f"--temperature must be > 0, got {self.temperature}")
        if self.radius < 0:
            raise DinoevalError(f"--radius must be >= 0 patches (0: whole frame), got {self.radius}")
        if self.tile < 1:
            raise DinoevalError(f"tile must be >= 1, got {self.tile}")


def propagate(target: torch.Tensor, sources: torch.Tensor, source_labels: torch.Tensor,
              config: PropagationConfig) -> torch.Tensor:
    """Labels of one target frame from context frames (step 3 of the protocol).

    Args:
        target: ``(h, w, D)`` L2-normalised patch features of the target frame.
        sources: ``(n, h, w, D)`` L2-normalised features of the ``n`` context frames.
        source_labels: ``(n, C, h, w)`` non-negative (soft) labels of the context frames.
        config: ``topk``, ``temperature``, ``radius``, ``tile``.

    Returns:
        ``(C, h, w)`` float32 soft labels; each patch's labels are a convex combination of its
        top-k sources' labels (they sum to one when the sources' do).
    """
    h, w, _ = target.shape
    n, c = source_labels.shape[:2]
    if sources.shape[:3] != (n, h, w) or source_labels.shape[2:] != (h, w):
        raise ValueError(f"shapes disagree: target {tuple(target.shape)}, sources "
                         f"{tuple(sources.shape)}, labels {tuple(source_labels.shape)}")
    out = torch.empty(c, h, w, dtype=torch.float32, device=target.device)
    r = config.radius if config.radius > 0 else max(h, w)
    t = config.tile
    for r0 in range(0, h, t):
        for c0 in range(0, w, t):
            r1, c1 = min(h, r0 + t), min(w, c0 + t)
            out[:, r0:r1, c0:c1] = _propagate_tile(
                target, sources, source_labels, (r0, r1, c0, c1), r, config)
    return out


def _propagate_tile(target: torch.Tensor, sources: torch.Tensor, labels: torch.Tensor,
                    box: tuple[int, int, int, int], r: int, config: PropagationConfig
                    ) -> torch.Tensor:
    r0, r1, c0, c1 = box
    h, w = target.shape[:2]
    n, c = labels.shape[:2]
    s0, s1, q0, q1 = max(0, r0 - r), min(h, r1 + r), max(0, c0 - r), min(w, c1 + r)
    tgt = target[r0:r1, c0:c1].reshape(-1, target.shape[-1]).float()           # (m, D)
    src = sources[:, s0:s1, q0:q1].reshape(n, -1, sources.shape[-1]).float()  # (n, ms, D)
    sim = torch.einsum("md,nsd->mns", tgt, src)                               # (m, n, ms)
    ti, tj = _grid(r0, r1, c0, c1, target.device)
    si, sj = _grid(s0, s1, q0, q1, target.device)
    near = ((ti[:, None] - si[None, :]).abs() <= r) & ((tj[:, None] - sj[None, :]).abs() <= r)
    sim = sim.masked_fill(~near[:, None, :], float("-inf")).reshape(sim.shape[0], -1)
    k = min(config.topk, sim.shape[1])
    vals, idx = sim.topk(k, dim=1)                                             # (m, k)
    weights = torch.softmax(vals / config.temperature, dim=1)
    lab = labels[:, :, s0:s1, q0:q1].reshape(n, c, -1).permute(0, 2, 1).reshape(-1, c).float()
    tile = (weights[:, :, None] * lab[idx]).sum(1)                             # (m, C)
    return tile.T.reshape(c, r1 - r0, c1 - c0)


def _grid(r0: int, r1: int, c0: int, c1: int, device: torch.device
          ) -> tuple[torch.Tensor, torch.Tensor]:
    ii, jj = torch.meshgrid(torch.arange(r0, r1, device=device),
                            torch.arange(c0, c1, device=device), indexing="ij")
    return ii.reshape(-1), jj.reshape(-1)


class LabelPropagator:
    """Streams a video through the protocol, keeping each context frame's features once.

    Args:
        first_features: ``(h, w, D)`` patch features of the first frame (normalised here).
        first_labels: ``(C, h, w)`` one-hot labels of the first frame (see :func:`one_hot_grid`).
        config: the propagation settings.

    :meth:`step` takes the next frame's ``(h, w, D)`` features and returns its ``(C, h, w)`` soft
    labels; the frame and its labels then join the queue of the ``n_last_frames`` previous frames.
    """

    def __init__(self, first_features: torch.Tensor, first_labels: torch.Tensor,
                 config: PropagationConfig) -> None:
        self.config = config
        self.first = (F.normalize(first_features.float(), dim=-1), first_labels.float())
        self.queue: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=config.n_last_frames)

    def step(self, features: torch.Tensor) -> torch.Tensor:
        feat = F.normalize(features.float(), dim=-1)
        context = [self.first, *self.queue]
        labels = propagate(feat, torch.stack([f for f, _ in context]),
                           torch.stack([s for _, s in context]), self.config)
        if self.config.n_last_frames > 0:
            self.queue.append((feat, labels))
        return labels


def one_hot_grid(mask: np.ndarray, grid_hw: tuple[int, int], num_labels: int) -> torch.Tensor:
    """First-frame labels on the patch grid: nearest resize (PIL) then one-hot.

    Args:
        mask: ``(H, W)`` integer labels ``0..num_labels-1`` (0 = background).
        grid_hw: ``(h, w)`` patch grid.
        num_labels: ``C`` (objects + background).

    Returns:
        ``(C, h, w)`` float32 one-hot.
    """
    small = np.asarray(Image.fromarray(np.asarray(mask, dtype=np.uint8)).resize(
        (grid_hw[1], grid_hw[0]), Image.NEAREST))
    lab = torch.from_numpy(small.astype(np.int64))
    if int(lab.max()) >= num_labels:
        raise ValueError(f"first-frame label {int(lab.max())} >= num_labels {num_labels}")
    return F.one_hot(lab, num_labels).permute(2, 0, 1).float()


def labels_to_mask(soft: torch.Tensor, patch_size: int, out_hw: tuple[int, int]) -> np.ndarray:
    """Step 4: ``(C, h, w)`` soft labels -> ``(H, W)`` uint8 label map at the original size.

    Bilinear upsampling by ``patch_size`` (``align_corners=False``), per-channel min-max
    normalisation of channels whose maximum is positive, arg-max, then a nearest (PIL) resize to
    ``out_hw = (H, W)``.
    """
    up = F.interpolate(soft[None].float(), scale_factor=patch_size, mode="bilinear",
                       align_corners=False)[0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    scaled = (up - lo) / torch.where(hi - lo > 0, hi - lo, torch.ones_like(hi))
    up = torch.where(hi > 0, scaled, up)
    seg = up.argmax(0).to(torch.uint8).cpu().numpy()
    return np.asarray(Image.fromarray(seg).resize((out_hw[1], out_hw[0]), Image.NEAREST))


def frame_size(height: int, width: int, short: int = 480, multiple: int = 64) -> tuple[int, int]:
    """DINO's ``read_frame`` size: the short side becomes ``short``, the long side is scaled by
    the same factor and floored to a multiple of ``multiple``. Returns ``(H', W')``."""
    if height > width:
        return int((short * height / width) // multiple * multiple), short
    return short, int((short * width / height) // multiple * multiple)


def propagate_video(features: Sequence[torch.Tensor], first_mask: np.ndarray, num_labels: int,
                    patch_size: int, out_hw: tuple[int, int], config: PropagationConfig
                    ) -> list[np.ndarray]:
    """The whole protocol on features in hand: ``T`` ``(h, w, D)`` tensors and the first frame's
    ``(H, W)`` labels -> ``T`` ``(H, W)`` uint8 label maps (the first is ``first_mask`` itself)."""
    grid = tuple(features[0].shape[:2])
    prop = LabelPropagator(features[0], one_hot_grid(first_mask, grid, num_labels), config)  # type: ignore[arg-type]
    masks = [np.asarray(first_mask, dtype=np.uint8)]
    for feat in features[1:]:
        masks.append(labels_to_mask(prop.step(feat), patch_size, out_hw))
    return masks
