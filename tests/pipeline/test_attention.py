"""The attention runner: image preparation, ground truth, scoring, result rows."""

from __future__ import annotations

import numpy as np
import pytest

from dinoeval.data import ArraySource
from dinoeval.models import ViTArch
from tests.conftest import attention_vit as _vit


def _backbone(model, prefix=1):
    from dinoeval.models import Backbone

    arch = ViTArch(embed_dim=64, depth=2, num_heads=4, patch_size=4, img_size=(16, 16),
                   reg_tokens=prefix - 1)
    return Backbone(spec="tiny", kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash="tiny0", img_size=(16, 16))


def test_runner_scores_sources_with_masks_and_writes_rows():
    from dinoeval.pipeline.attention import AttentionConfig, attention_frame, run_attention
    from dinoeval.results import COLUMNS

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (5, 18, 22, 3), dtype=np.uint8)
    masks = np.zeros((5, 18, 22), dtype=bool)
    masks[:, 4:12, 6:16] = True
    src = ArraySource(images, np.arange(5) % 2, spec="fake", name="fake", split="test",
                      classes=("a", "b"), masks=masks)
    model, prefix = _vit(reg_tokens=1)
    run = run_attention(_backbone(model, prefix), src, [0, 2, 4],
                        AttentionConfig(resize=0, batch_size=2))
    assert [im.shape for im in run.images] == [(16, 20, 3)] * 3  # centre-cropped to 4 px
    assert run.masks[0].attn.shape == (4, 4, 5)
    assert run.jaccard is not None and run.jaccard.per_head.shape == (3, 4)
    np.testing.assert_array_equal(run.targets[1], masks[2, 1:17, 1:21])
    assert "centre-cropped" in run.prep and "18×22 → 16×20" in run.prep
    frame = attention_frame(run, src)
    assert list(frame.columns) == list(COLUMNS)
    assert set(frame["param"]) >= {"head=0", "head=best", "head=mean"}
    assert (frame["feature"] == "attn:block1:mass0.6").all()


def test_runner_pads_and_resizes_and_fashion_mnist_foreground_is_nonzero_pixels():
    from dinoeval.pipeline.attention import (
        AttentionConfig,
        foreground_mask,
        mask_provider,
        run_attention,
    )

    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[:, 5:20, 8:22] = 200
    src = ArraySource(images, np.zeros(2, dtype=np.int64), spec="fashion-mnist:test",
                      name="fashion-mnist", split="test", classes=("x",))
    assert mask_provider(src) is foreground_mask
    fg = foreground_mask(0, src.load(0))
    assert fg.sum() == 15 * 14 and fg[5, 8] and not fg[4, 8]
    model, _ = _vit()
    run = run_attention(_backbone(model), src, [0, 1], AttentionConfig(resize=30, fit="pad"))
    assert run.images[0].shape == (32, 32, 3)  # 28 -> 30 -> padded to 32
    assert run.targets[0].shape == (32, 32) and not run.targets[0][30:].any()
    assert "resized to 30 px" in run.prep and "zero-padded" in run.prep
    assert run.jaccard is not None


def test_runner_draws_files_without_ground_truth(tmp_path):
    from PIL import Image

    from dinoeval.data.files import FileListSource
    from dinoeval.pipeline.attention import AttentionConfig, run_attention

    rng = np.random.default_rng(1)
    paths = []
    for i, (h, w) in enumerate([(20, 33), (17, 17)]):
        p = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    src = FileListSource(paths)
    model, _ = _vit()
    run = run_attention(_backbone(model), src, [0, 1], AttentionConfig(resize=0))
    assert run.jaccard is None and run.targets == [None, None]
    assert run.masks[0].attn.shape == (4, 5, 8) and run.masks[1].attn.shape == (4, 4, 4)


@pytest.mark.gpu
def test_runner_on_cuda_moves_the_model_and_matches_cpu():
    from dinoeval.pipeline.attention import AttentionConfig, run_attention

    images = np.zeros((3, 16, 16), dtype=np.uint8)
    images[:, 4:12, 4:12] = 255
    src = ArraySource(images, np.zeros(3, np.int64), spec="fashion-mnist:test",
                      name="fashion-mnist", split="test", classes=("x",))
    model, _ = _vit()
    cpu = run_attention(_backbone(model), src, [0, 1, 2], AttentionConfig())
    gpu = run_attention(_backbone(model), src, [0, 1, 2], AttentionConfig(device="cuda"))
    np.testing.assert_allclose(gpu.masks[0].attn, cpu.masks[0].attn, rtol=2e-3, atol=2e-4)


def test_runner_rejects_pixels_and_bad_blocks():
    from dinoeval.errors import DinoevalError
    from dinoeval.models import load_backbone
    from dinoeval.pipeline.attention import AttentionConfig, run_attention

    src = ArraySource(np.zeros((1, 16, 16), np.uint8), np.zeros(1, np.int64), spec="z",
                      name="z", split="all", classes=("z",))
    with pytest.raises(DinoevalError, match="no attention"):
        run_attention(load_backbone("pixels"), src, [0], AttentionConfig())
    model, _ = _vit()
    with pytest.raises(DinoevalError, match="--block 7 out of range"):
        run_attention(_backbone(model), src, [0], AttentionConfig(block=7))
