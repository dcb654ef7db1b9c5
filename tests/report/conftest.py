"""Synthetic attention runs and results tables for the report tests (no model needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dinoeval.eval.attention import attention_masks, score_masks
from dinoeval.pipeline.attention import AttentionRun
from dinoeval.results import Context, Row, concat, to_frame


def make_run(label: str, images: list[np.ndarray], *, heads: int, patch: int, seed: int,
             with_targets: bool = True) -> AttentionRun:
    rng = np.random.default_rng(seed)
    masks, targets, prepared = [], [], []
    for img in images:
        h, w = img.shape[0] // patch * patch, img.shape[1] // patch * patch
        im = img[:h, :w]
        attn = rng.random((heads, h // patch, w // patch)).astype(np.float32) ** 4
        masks.append(attention_masks(attn, patch, mass=0.6))
        t = np.zeros((h, w), dtype=bool)
        t[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = True
        targets.append(t)
        prepared.append(im)
    jac = score_masks(masks, targets, mass=0.6, block=11) if with_targets else None
    return AttentionRun(
        spec=label, label=label, arch=f"ViT-S/{patch}", content_hash=f"hash{seed}",
        patch_size=patch, num_heads=heads, block=11, mass=0.6,
        indices=np.arange(len(images)), images=prepared,
        targets=targets if with_targets else [None] * len(images), masks=masks, jaccard=jac,
        prep=f"native size, centre-cropped to a multiple of the {patch}px patch", seconds=0.1)


@pytest.fixture
def run_factory():
    """:func:`make_run`, for tests that build their own runs."""
    return make_run


@pytest.fixture
def originals() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = [(64, 64), (48, 80), (28, 28), (90, 60)]  # square, wide, tiny, tall
    return [rng.integers(0, 255, (*s, 3), dtype=np.uint8) for s in shapes]


@pytest.fixture
def runs(originals) -> list[AttentionRun]:
    names = ["runs/fm/checkpoint.pth", "random:vit_small_patch8_64",
             "a/really/long/path/to/some/experiment/with/a/long/name/checkpoint0100.pth"]
    return [make_run(n, originals, heads=6, patch=p, seed=i)
            for i, (n, p) in enumerate(zip(names, (8, 8, 4), strict=True))]


@pytest.fixture
def results_frame() -> pd.DataFrame:
    frames = []
    for b, base in (("runs/fm/checkpoint.pth", 0.8), ("random:vit_tiny", 0.6), ("pixels", 0.7)):
        ctx = Context(backbone=b, ckpt_hash="h" + b[:3], arch="ViT-T/4", dataset="fashion-mnist",
                      split="test", feature="cls")
        rows = [Row("knn", m, base + 0.01 * k ** 0.5 - (0.1 if m == "top1" else 0),
                    f"k={k}", 1000) for k in (10, 20, 100, 200) for m in ("top1", "top5")]
        rows += [Row("linear", "top1", base + 0.05, "", 1000)]
        rows += [Row("collapse", m, v, "", 1000) for m, v in
                 (("effective_rank", 40 * base), ("nc1", 1 / base), ("mean_cosine", base / 3))]
        rows += [Row("attention", "jaccard", base / 2, f"head={h}", 32) for h in range(3)]
        rows += [Row("attention", "jaccard", base / 1.8, "head=mean", 32)]
        rows += [Row("clusters", "nmi", base - 0.2, "k=10", 1000)]
        frames.append(to_frame(rows, ctx, seconds=1.0))
    return concat(frames)


@pytest.fixture
def pretrain_log(tmp_path):
    """A run folder as ``pretrain`` writes it: ``log.csv`` per step, ``epochs.csv`` per epoch."""
    run = tmp_path / "run"
    run.mkdir()
    steps = np.arange(10, 210, 10)
    pd.DataFrame({
        "step": steps, "epoch": steps / 50, "loss": 6 - np.log1p(steps) / 3,
        "teacher_entropy": 6.9 - steps / 100, "kl": 0.2 + steps / 1000, "center_norm": 1.0,
        "lr": 1e-3, "images_per_s": 20.0, "note": "x",
    }).to_csv(run / "log.csv", index=False)
    pd.DataFrame({
        "epoch": [0, 1, 2, 3, 4], "step": [0, 50, 100, 150, 200],
        "loss": [np.nan, 5.5, 5.2, 5.0, 4.9], "knn_top1": [0.48, 0.52, 0.55, 0.57, 0.6],
        "knn_top5": [0.9, 0.91, 0.92, 0.93, 0.94], "knn_k": 20,
    }).to_csv(run / "epochs.csv", index=False)
    return run
