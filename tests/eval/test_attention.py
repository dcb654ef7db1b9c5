"""Attention extraction, mass-threshold masks and Jaccard: known answers and invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dinoeval.data import ArraySource
from dinoeval.eval.attention import (
    JaccardResult,
    attention_masks,
    cls_attention,
    jaccard_score,
    mass_threshold_mask,
    prepare_image,
    score_masks,
    upsample_mask,
)
from dinoeval.models import ViTArch, build_vit


def _vit(reg_tokens: int = 0, seed: int = 0, layer_scale: bool = False):
    arch = ViTArch(embed_dim=64, depth=2, num_heads=4, patch_size=4, img_size=(16, 16),
                   reg_tokens=reg_tokens, layer_scale=layer_scale)
    gen = torch.Generator().manual_seed(seed)
    model = build_vit(arch).eval()
    with torch.no_grad():  # non-trivial weights everywhere so layout bugs change the answer
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model, 1 + reg_tokens


def _manual_cls_attention(model, x: torch.Tensor, block: int, prefix: int) -> torch.Tensor:
    """softmax(q kᵀ · d^-1/2) from the block's weights, written out by hand."""
    with torch.no_grad():
        t = model.norm_pre(model._pos_embed(model.patch_embed(x)))
        for blk in model.blocks[:block]:
            t = blk(t)
        blk = model.blocks[block]
        y = blk.norm1(t)
        D = y.shape[-1]
        H = blk.attn.num_heads
        d = D // H
        W, b = blk.attn.qkv.weight, blk.attn.qkv.bias
        q = y @ W[:D].T + b[:D]
        k = y @ W[D:2 * D].T + b[D:2 * D]
        out = []
        for h in range(H):
            qh, kh = q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d]
            scores = torch.einsum("btd,bsd->bts", qh, kh) / d ** 0.5
            out.append(torch.softmax(scores, dim=-1)[:, 0, prefix:])
        return torch.stack(out, dim=1)


# ------------------------------------------------------------------ masks against known answers


def test_mass_threshold_keeps_hand_computed_patches():
    attn = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    # ranked 0.4, 0.3, 0.15, 0.1, 0.05: mass above each is 0, .4, .7, .85, .95
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.6), [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.75), [0, 1, 0, 1, 1])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.4), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 1.0), [1, 1, 1, 1, 1])
    # Unnormalised input (registers take some mass) is normalised first.
    np.testing.assert_array_equal(mass_threshold_mask(attn * 0.37, 0.6), [0, 1, 0, 1, 0])


def test_mass_threshold_works_per_row_of_a_batch():
    attn = np.array([[0.1, 0.4, 0.05, 0.3, 0.15], [0.5, 0.1, 0.1, 0.2, 0.1]])
    np.testing.assert_array_equal(mass_threshold_mask(attn, 0.6),
                                  [[0, 1, 0, 1, 0], [1, 0, 0, 1, 0]])


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 60), elements=st.floats(0.001, 1.0)),
       st.floats(0.05, 1.0))
def test_mass_kept_is_at_least_x_and_minimal(attn, mass):
    keep = mass_threshold_mask(attn, mass)
    p = attn / attn.sum()
    kept = p[keep].sum()
    assert kept >= mass - 1e-9
    # Minimal: without its weakest patch the mask holds less than X.
    assert kept - p[keep].min() < mass + 1e-9
    # The kept patches are the strongest ones.
    if (~keep).any():
        assert p[keep].min() >= p[~keep].max()


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(2, 50), elements=st.floats(0.001, 1.0), unique=True),
       st.floats(0.1, 0.95))
def test_mass_threshold_equals_the_official_ascending_cumsum_rule(attn, mass):
    # visualize_attention.py: sort ascending, cumsum of normalised values > 1 - threshold.
    p = attn / attn.sum()
    idx = np.argsort(p)
    official = np.zeros_like(p, dtype=bool)
    official[idx] = np.cumsum(p[idx]) > 1 - mass
    np.testing.assert_array_equal(mass_threshold_mask(attn, mass), official)


def test_mass_threshold_rejects_bad_input():
    with pytest.raises(ValueError, match="mass"):
        mass_threshold_mask(np.ones(4), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        mass_threshold_mask(np.array([0.5, -0.1]), 0.6)


def test_upsample_mask_repeats_each_patch():
    m = np.array([[True, False], [False, True]])
    up = upsample_mask(m, 3)
    assert up.shape == (6, 6)
    assert up[:3, :3].all() and not up[:3, 3:].any() and up[3:, 3:].all()


def test_attention_masks_threshold_heads_and_their_mean():
    attn = np.zeros((2, 2, 2), dtype=np.float32)
    attn[0] = [[0.7, 0.1], [0.1, 0.1]]
    attn[1] = [[0.1, 0.1], [0.1, 0.7]]
    m = attention_masks(attn, patch_size=2, mass=0.6)
    assert m.head_masks.shape == (2, 4, 4) and m.mean_mask.shape == (4, 4)
    assert m.head_masks[0, :2, :2].all() and m.head_masks[0].sum() == 4
    assert m.head_masks[1, 2:, 2:].all() and m.head_masks[1].sum() == 4
    # Mean: 0.4, 0.1, 0.1, 0.4 -> both corners (mass 0.8 >= 0.6; one alone is 0.4).
    assert m.mean_mask[:2, :2].all() and m.mean_mask[2:, 2:].all() and m.mean_mask.sum() == 8


# ------------------------------------------------------------------------------------ Jaccard


def test_jaccard_known_answers():
    a = np.array([[1, 1, 0], [0, 0, 0]], dtype=bool)
    b = np.array([[1, 0, 0], [1, 0, 0]], dtype=bool)
    assert jaccard_score(a, b) == pytest.approx(1 / 3)
    assert jaccard_score(a, a) == 1.0
    assert jaccard_score(a, ~a) == 0.0
    assert jaccard_score(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    with pytest.raises(ValueError, match="shapes differ"):
        jaccard_score(a, b.T)


def test_jaccard_result_rows_best_and_mean_of_heads():
    res = JaccardResult(per_head=np.array([[0.5, 1.0], [0.1, 0.0]]),
                        mean_heads=np.array([0.2, 0.4]), mass=0.6, block=1)
    rows = {(r.metric, r.param): r.value for r in res.to_rows()}
    assert rows[("jaccard", "head=0")] == pytest.approx(0.3)
    assert rows[("jaccard", "head=1")] == pytest.approx(0.5)
    assert rows[("jaccard", "head=best")] == pytest.approx(0.5)
    assert rows[("jaccard", "head=mean")] == pytest.approx(0.3)
    assert rows[("best_head", "")] == 1
    assert all(r.n == 2 and r.eval == "attention" for r in res.to_rows())


def test_score_masks_against_targets():
    attn = np.zeros((1, 2, 2), dtype=np.float32)
    attn[0] = [[0.9, 0.04], [0.03, 0.03]]
    m = attention_masks(attn, 2, mass=0.6)
    target = np.zeros((4, 4), dtype=bool)
    target[:2, :4] = True  # top half: the mask (top-left patch) covers half of it
    res = score_masks([m], [target], mass=0.6, block=0)
    assert res.per_head[0, 0] == pytest.approx(0.5)
    assert res.mean_heads[0] == pytest.approx(0.5)


# ----------------------------------------------------------------- explicit attention extraction


@pytest.mark.parametrize("reg_tokens", [0, 2])
@pytest.mark.parametrize("block", [0, -1])
def test_explicit_attention_equals_softmax_qk_from_block_weights(reg_tokens, block):
    model, prefix = _vit(reg_tokens)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    got = cls_attention(model, x, block=block, num_prefix_tokens=prefix)
    want = _manual_cls_attention(model, x, block % len(model.blocks), prefix)
    assert got.shape == (3, 4, 4, 4)
    torch.testing.assert_close(got.flatten(2), want, rtol=1e-5, atol=1e-6)
    # The prefix tokens (class + registers) are left out: the patch maps sum to less than 1.
    assert (got.sum((-1, -2)) < 1).all()


def test_explicit_attention_matches_timms_non_fused_path_with_fused_on_and_off():
    model, prefix = _vit(reg_tokens=1, layer_scale=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    attn = model.blocks[-1].attn
    assert attn.fused_attn, "timm should use fused SDPA here; the test covers that case"
    fused = cls_attention(model, x, num_prefix_tokens=prefix)

    captured = []
    handle = attn.attn_drop.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        for blk in model.blocks:
            blk.attn.fused_attn = False
        with torch.no_grad():
            model(x)
        unfused = cls_attention(model, x, num_prefix_tokens=prefix)
    finally:
        handle.remove()
        for blk in model.blocks:
            blk.attn.fused_attn = True
    timm_row = captured[0][:, :, 0, prefix:].reshape(2, -1, 4, 4)
    torch.testing.assert_close(fused, timm_row, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(unfused, timm_row, rtol=1e-5, atol=1e-6)


def test_explicit_attention_on_non_square_inputs():
    model, prefix = _vit(reg_tokens=2)
    x = torch.randn(2, 3, 12, 28, generator=torch.Generator().manual_seed(3))
    got = cls_attention(model, x, num_prefix_tokens=prefix)
    assert got.shape == (2, 4, 3, 7)
    want = _manual_cls_attention(model, x, 1, prefix)
    torch.testing.assert_close(got.flatten(2), want, rtol=1e-5, atol=1e-6)
    # Rows follow the image's rows: a (3, 7) grid, not a (7, 3) one.
    torch.testing.assert_close(got[:, :, 1, :], want[:, :, 7:14], rtol=1e-5, atol=1e-6)


def test_explicit_attention_rejects_bad_sizes_and_blocks():
    model, _ = _vit()
    with pytest.raises(ValueError, match="multiple of the patch size"):
        cls_attention(model, torch.zeros(1, 3, 15, 16))
    with pytest.raises(ValueError, match="out of range"):
        cls_attention(model, torch.zeros(1, 3, 16, 16), block=2)
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        cls_attention(model, torch.zeros(1, 3, 16, 16), num_prefix_tokens=3)


@pytest.mark.gpu
def test_explicit_attention_on_cuda_matches_cpu():
    model, prefix = _vit(reg_tokens=1)
    x = torch.randn(4, 3, 16, 20, generator=torch.Generator().manual_seed(4))
    cpu = cls_attention(model, x, num_prefix_tokens=prefix)
    gpu = cls_attention(model.cuda(), x.cuda(), num_prefix_tokens=prefix)
    # cuDNN may run the patch-embedding convolution in TF32.
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-4)


def test_prepare_image_crops_centre_or_pads():
    img = np.arange(30 * 45 * 3, dtype=np.int64).reshape(30, 45, 3)
    crop = prepare_image(img, 8, fit="crop")
    assert crop.shape == (24, 40, 3)
    np.testing.assert_array_equal(crop, img[3:27, 2:42])
    pad = prepare_image(img, 8, fit="pad")
    assert pad.shape == (32, 48, 3)
    np.testing.assert_array_equal(pad[:30, :45], img)
    assert not pad[30:].any() and not pad[:, 45:].any()
    with pytest.raises(ValueError, match="smaller than one"):
        prepare_image(img[:5], 8)


# ----------------------------------------------------------------------------------- runner


def _backbone(model, prefix=1):
    from dinoeval.models import Backbone

    arch = ViTArch(embed_dim=64, depth=2, num_heads=4, patch_size=4, img_size=(16, 16),
                   reg_tokens=prefix - 1)
    return Backbone(spec="tiny", kind="vit", model=model, arch=arch, name=arch.name,
                    content_hash="tiny0", img_size=(16, 16))


def test_runner_scores_sources_with_masks_and_writes_rows():
    from dinoeval.eval.attention_runner import AttentionConfig, attention_frame, run_attention
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
    from dinoeval.eval.attention_runner import (
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

    from dinoeval.eval.attention_runner import AttentionConfig, FileListSource, run_attention

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
    from dinoeval.eval.attention_runner import AttentionConfig, run_attention

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
    from dinoeval.eval.attention_runner import AttentionConfig, run_attention
    from dinoeval.models import load_backbone

    src = ArraySource(np.zeros((1, 16, 16), np.uint8), np.zeros(1, np.int64), spec="z",
                      name="z", split="all", classes=("z",))
    with pytest.raises(DinoevalError, match="no attention"):
        run_attention(load_backbone("pixels"), src, [0], AttentionConfig())
    model, _ = _vit()
    with pytest.raises(DinoevalError, match="--block 7 out of range"):
        run_attention(_backbone(model), src, [0], AttentionConfig(block=7))


# -------------------------------------------------------------------------------------- CLI


@pytest.fixture
def tiny_ckpt(tmp_path):
    model, _ = _vit()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_cli_attention_writes_report_and_results(tmp_path, tiny_ckpt, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from dinoeval.cli import app
    from dinoeval.results import read_results

    files = []
    for i, (h, w) in enumerate([(24, 40), (30, 18)]):
        p = tmp_path / f"f{i}.png"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(p)
        files.append(str(p))
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["attention", "--ckpt", str(tiny_ckpt), "--num-heads", "4",
                                 "--images", *files, "--resize", "0", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "index.html").exists() and (out / "figures" / "image_001.png").exists()
    assert "not scored" in r.output

    data = ArraySource(np.pad(np.full((3, 12, 12), 200, np.uint8), ((0, 0), (2, 2), (2, 2))),
                       np.zeros(3, np.int64), spec="fashion-mnist:test", name="fashion-mnist",
                       split="test", classes=("x",))
    from dinoeval.data import registry

    monkeypatch.setitem(registry._REGISTRY, "tiny-fm", (lambda a, d: data, "test only"))
    res = tmp_path / "res.csv"
    r = CliRunner().invoke(app, ["attention", "-c", str(tiny_ckpt), "--num-heads", "4",
                                 "--data", "tiny-fm", "--n", "2", "--out", str(out),
                                 "--results", str(res), "--no-png"])
    assert r.exit_code == 0, r.output
    df = read_results(res)
    assert set(df["param"]) >= {"head=best", "head=mean", "head=3"}
    assert (df["n"] == 2).all()


@pytest.mark.parametrize("args, message", [
    (["--out", "x"], "exactly one of --data"),
    (["--out", "x", "--data", "digits", "--fit", "stretch"], "--fit must be crop or pad"),
    (["--out", "x", "--data", "digits", "--mass", "1.5"], "--mass must be in"),
    (["--out", "x", "--data", "digits", "--block", "9"], "--block 9 out of range"),
    (["--out", "x", "--images", "missing.png"], "missing.png not found"),
    (["--out", "x", "stray.png"], "image files go after --images"),
])
def test_cli_attention_bad_input_exits_2(args, message, tiny_ckpt):
    from typer.testing import CliRunner

    from dinoeval.cli import app

    r = CliRunner().invoke(app, ["attention", "--ckpt", str(tiny_ckpt), "--num-heads", "4",
                                 *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
