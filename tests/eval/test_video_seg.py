"""Label propagation against a direct dense implementation of DINO's formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinoeval.errors import DinoevalError
from dinoeval.eval.video_seg import (
    LabelPropagator,
    PropagationConfig,
    frame_size,
    labels_to_mask,
    one_hot_grid,
    propagate_video,
)


def _dense_step(tar, ctx_feats, ctx_segs, cfg):
    """DINO's label_propagation written out: dense (hw x hw) affinity per context frame."""
    h, w, d = tar.shape
    tar = F.normalize(tar.reshape(-1, d), dim=1)
    src = F.normalize(torch.stack([f.reshape(-1, d) for f in ctx_feats]), dim=2)  # n, hw, D
    aff = torch.exp(torch.einsum("td,nsd->nts", tar, src).double() / cfg.temperature)
    if cfg.radius > 0:
        ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        ii, jj = ii.ravel(), jj.ravel()
        mask = (np.abs(ii[:, None] - ii[None]) <= cfg.radius) & (
            np.abs(jj[:, None] - jj[None]) <= cfg.radius)
        aff = aff * torch.from_numpy(mask)[None]
    aff = aff.transpose(2, 1).reshape(-1, h * w)  # (n*hw sources, hw targets)
    kth = aff.topk(cfg.topk, dim=0).values.min(0).values
    aff[aff < kth] = 0
    aff = aff / aff.sum(0, keepdim=True)
    segs = torch.stack(ctx_segs).double()  # n, C, h, w
    segs = segs.reshape(len(ctx_segs), segs.shape[1], -1).transpose(2, 1).reshape(-1, segs.shape[1])
    return (segs.T @ aff).reshape(-1, h, w).float()


def _dense_video(feats, first_seg, cfg):
    queue, outs = [], []
    for t in range(1, len(feats)):
        ctx = [(feats[0], first_seg), *queue[-cfg.n_last_frames:]] if cfg.n_last_frames else [
            (feats[0], first_seg)]
        seg = _dense_step(feats[t], [f for f, _ in ctx], [s for _, s in ctx], cfg)
        queue.append((feats[t], seg))
        outs.append(seg)
    return outs


@pytest.mark.parametrize("cfg", [
    PropagationConfig(n_last_frames=2, topk=3, radius=2, tile=4),
    PropagationConfig(n_last_frames=7, topk=5, radius=0, tile=3),
    PropagationConfig(n_last_frames=0, topk=1, radius=1, tile=16, temperature=0.05),
])
def test_tiled_propagation_equals_dense_formula(cfg):
    g = torch.Generator().manual_seed(0)
    h, w, d, t = 6, 7, 8, 6
    base = torch.randn(h, w, d, generator=g)
    feats = [base + 0.7 * torch.randn(h, w, d, generator=g) for _ in range(t)]
    first = np.zeros((h, w), np.uint8)
    first[1:4, 2:5] = 1
    first[4:, :2] = 2
    seg0 = one_hot_grid(first, (h, w), 3)
    expected = _dense_video(feats, seg0, cfg)
    prop = LabelPropagator(feats[0], seg0, cfg)
    for t_i in range(1, t):
        got = prop.step(feats[t_i])
        torch.testing.assert_close(got, expected[t_i - 1], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(got.sum(0), torch.ones(h, w), atol=1e-5, rtol=0)


def test_neighbourhood_restricts_sources():
    # The target's feature equals a far source patch exactly; with radius 1 it cannot be used.
    h, w, d = 5, 5, 4
    feats = torch.full((h, w, d), 0.0)
    feats[..., 0] = 1.0
    far = torch.zeros(h, w, d)
    far[..., 1] = 1.0
    src = feats.clone()
    src[0, 0] = far[0, 0]               # only source (0, 0) matches the target's feature
    labels = torch.zeros(2, h, w)
    labels[0] = 1
    labels[:, 0, 0] = torch.tensor([0.0, 1.0])
    tgt = torch.zeros(h, w, d)
    tgt[..., 1] = 1.0
    cfg = PropagationConfig(topk=1, radius=1, n_last_frames=0)
    out = LabelPropagator(src, labels, cfg).step(tgt)
    assert out[1, 0, 0] == 1 and out[1, 1, 1] == 1  # within one patch of (0, 0)
    assert out[1, 4, 4] == 0                        # too far: label 0 from a nearby source


def test_labels_to_mask_and_sizes():
    soft = torch.zeros(2, 2, 3)
    soft[0] = 1.0
    soft[1, :, 2] = 2.0  # right column is object 1
    soft[0, :, 2] = 0.0
    out = labels_to_mask(soft, 4, (8, 12))
    assert out.shape == (8, 12) and out.dtype == np.uint8
    assert (out[:, :8] == 0).all() and (out[:, 10:] == 1).all()
    assert frame_size(480, 854) == (480, 832)   # DAVIS 480p: 854 * 1 floored to 64s
    assert frame_size(854, 480) == (832, 480)
    assert frame_size(64, 96, short=64) == (64, 64)


def test_propagate_video_keeps_first_mask_and_validates():
    feats = [torch.randn(4, 4, 8) for _ in range(3)]
    first = np.zeros((16, 16), np.uint8)
    first[:8] = 1
    out = propagate_video(feats, first, 2, 4, (16, 16), PropagationConfig())
    assert len(out) == 3 and (out[0] == first).all() and out[2].shape == (16, 16)
    with pytest.raises(DinoevalError, match="--topk"):
        PropagationConfig(topk=0)
    with pytest.raises(DinoevalError, match="--radius"):
        PropagationConfig(radius=-1)
