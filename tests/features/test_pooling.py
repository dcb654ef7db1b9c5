"""GeM pooling against a hand computation."""

from __future__ import annotations

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
