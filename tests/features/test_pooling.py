"""GeM pooling against a hand computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinoeval.features.pooling import gem


def test_gem_matches_hand_computation():
    tokens = torch.tensor([[[1.0, -2.0], [2.0, 0.0], [3.0, 4.0]]])  # (1, 3 tokens, 2 dims)
    out = gem(tokens, p=4)
    # dim 0: ((1 + 16 + 81) / 3) ** 0.25; dim 1: negatives and zero clamp to 1e-6
    expected0 = ((1 + 16 + 81) / 3) ** 0.25
    expected1 = ((2 * 1e-24 + 256) / 3) ** 0.25
    torch.testing.assert_close(out, torch.tensor([[expected0, expected1]]))
    torch.testing.assert_close(gem(tokens.clamp(min=0.5), p=1), tokens.clamp(min=0.5).mean(1))
    with pytest.raises(ValueError, match="exponent"):
        gem(tokens, p=0)


def test_cls_gem_feature_is_cls_then_gem_of_the_patch_tokens(tiny_vit, tiny_source, tmp_path):
    from dinoeval.features import extract_features
    from dinoeval.models import load_backbone

    p = tmp_path / "tiny.pth"
    torch.save(tiny_vit.state_dict(), p)
    bb = load_backbone(str(p))
    src = tiny_source
    both = extract_features(bb, src, kind="cls+gem", batch_size=16).features
    cls = extract_features(bb, src, kind="cls", batch_size=16).features
    patch = extract_features(bb, src, kind="patch", batch_size=16).features
    assert both.shape == (len(src), 2 * cls.shape[1])
    torch.testing.assert_close(torch.from_numpy(both[:, : cls.shape[1]]), torch.from_numpy(cls))
    torch.testing.assert_close(torch.from_numpy(both[:, cls.shape[1] :]),
                               gem(torch.from_numpy(patch), p=4), rtol=1e-4, atol=1e-5)


def test_multiscale_sizes_and_combination():
    from dinoeval.features.pooling import average_then_normalize, multiscale_sizes

    assert multiscale_sizes(224) == (224, 158, 112)
    assert multiscale_sizes(224, 16) == (224, 160, 112)
    assert multiscale_sizes(16, 4) == (16, 12, 8)
    a = np.array([[3.0, 0.0], [0.0, 1.0]], np.float32)
    b = np.array([[1.0, 0.0], [0.0, 3.0]], np.float32)
    c = np.array([[0.0, 2.0], [2.0, 2.0]], np.float32)
    # mean of the raw features, then L2: row 0 (4/3, 2/3) -> (2, 1)/sqrt(5)
    out = average_then_normalize([a, b, c])
    np.testing.assert_allclose(out[0], np.array([2, 1]) / np.sqrt(5), rtol=1e-6)
    np.testing.assert_allclose(out[1], np.array([1, 3]) / np.sqrt(10), rtol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        average_then_normalize([a, a[:, :1]])
