"""Tiny pretraining configs on scikit-learn's digits (8x8, built in: no files needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pretrain.config import PretrainConfig

TINY: dict[str, Any] = dict(
    data="digits:train", arch="vit_tiny", patch_size=4, img_size=8, local_size=4, embed_dim=32,
    depth=2, num_heads=2, drop_path=0.1, out_dim=64, head_hidden_dim=64, head_bottleneck_dim=32,
    local_crops_number=2, epochs=2, epoch_images=128, batch_size=32, warmup_epochs=1,
    warmup_teacher_temp_epochs=1, knn_train_size=200, knn_test_size=100, knn_k=10, log_every=1,
    save_every_minutes=0.0, num_threads=1,
)


@pytest.fixture(scope="session")
def tiny_config() -> Callable[..., PretrainConfig]:
    def make(**kw: Any) -> PretrainConfig:
        return PretrainConfig(**{**TINY, **kw})

    return make
