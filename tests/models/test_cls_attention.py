"""Explicit CLS attention of a ViT block against softmax(q kᵀ) written out from its weights,
and against timm's own non-fused attention."""

from __future__ import annotations

import pytest
import torch

from dinoeval.models.attention import cls_attention
from tests.conftest import attention_vit as _vit


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


def test_an_adapter_must_read_tokens_and_say_whether_it_has_attention():
    from dinoeval.errors import DinoevalError
    from dinoeval.models.registry import Adapter
    from dinoeval.models.resnet import RESNET_ADAPTER

    with pytest.raises(TypeError, match="abstract"):
        Adapter()

    class NoTokens(Adapter):
        no_attention = "none"

    with pytest.raises(TypeError, match="abstract"):
        NoTokens()
    with pytest.raises(TypeError, match="implement cls_attention or set no_attention"):
        class Silent(Adapter):  # claims attention, reads none
            def tokens(self, model, x, n_last):
                return []
    with pytest.raises(DinoevalError, match="ResNet has no self-attention"):
        RESNET_ADAPTER.cls_attention(torch.nn.Identity(), torch.zeros(1, 3, 8, 8), -1, 1)
