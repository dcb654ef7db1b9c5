"""DINO loss against a hand-computed example, and its centering/sharpening switches."""

from __future__ import annotations

import math

import pytest
import torch

from pretrain.loss import DINOLoss


def _softmax(xs: list[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def test_loss_matches_hand_computed_pairs():
    # B=1, K=3, views: 2 global + 1 local. Teacher view i pairs with every student view v != i.
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 2.0, 0.0]])
    t = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    loss_fn = DINOLoss(3, warmup_teacher_temp=0.5, teacher_temp=0.5, student_temp=1.0,
                       warmup_teacher_temp_epochs=0, center_momentum=0.9)
    loss, stats = loss_fn(s, t, epoch=0)
    pt = [_softmax(t[i].tolist(), 0.5) for i in range(2)]
    ls = [[math.log(p) for p in _softmax(s[v].tolist(), 1.0)] for v in range(3)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    expected = sum(-sum(a * b for a, b in zip(pt[i], ls[v], strict=True)) for i, v in pairs) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    ent = sum(-sum(p * math.log(p) for p in q) for q in pt) / 2
    assert stats.teacher_entropy == pytest.approx(ent, rel=1e-5)
    assert stats.kl == pytest.approx(expected - ent, rel=1e-5)
    # the center moved by (1 - m) * batch mean of the teacher logits
    torch.testing.assert_close(loss_fn.center, 0.1 * t.mean(0, keepdim=True))


def test_center_is_subtracted_and_follows_its_ema():
    loss_fn = DINOLoss(4, warmup_teacher_temp=0.1, teacher_temp=0.1, warmup_teacher_temp_epochs=0,
                       center_momentum=0.5)
    loss_fn.center.fill_(0.0)
    t1 = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    t2 = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    s = torch.randn(12, 4, generator=torch.Generator().manual_seed(2))
    loss_fn(s, t1, 0)
    loss_fn(s, t2, 0)
    expected = 0.5 * (0.5 * t1.mean(0)) + 0.5 * t2.mean(0)
    torch.testing.assert_close(loss_fn.center[0], expected)
    # a constant shift of the teacher logits is removed by a matching center
    ref = DINOLoss(4, warmup_teacher_temp=0.1, teacher_temp=0.1, warmup_teacher_temp_epochs=0)
    shifted = DINOLoss(4, warmup_teacher_temp=0.1, teacher_temp=0.1,
                       warmup_teacher_temp_epochs=0)
    shifted.center.copy_(torch.tensor([[3.0, -1.0, 0.0, 2.0]]))
    a, _ = ref(s, t1, 0)
    b, _ = shifted(s, t1 + shifted.center, 0)
    torch.testing.assert_close(a, b)


def test_ablation_switches():
    s = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    t = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    no_center = DINOLoss(5, centering=False)
    no_center.center.fill_(7.0)  # would change the loss if it were subtracted per class
    no_center.center[0, 0] = -7.0
    plain = DINOLoss(5, centering=False)
    plain.center.fill_(0.0)
    torch.testing.assert_close(no_center(s, t, 0)[0], plain(s, t, 0)[0])
    assert no_center.center[0, 0] == -7.0  # and not updated either
    no_sharp = DINOLoss(5, sharpening=False, student_temp=0.1)
    assert no_sharp.teacher_temp(0) == 0.1 and no_sharp.teacher_temp(50) == 0.1
    sharp = DINOLoss(5, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    assert sharp.teacher_temp(0) == pytest.approx(0.04)
    assert sharp.teacher_temp(29) == pytest.approx(0.07)


def test_kl_is_nonnegative_and_zero_when_student_equals_teacher():
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(3))
    loss_fn = DINOLoss(6, centering=False, sharpening=False, student_temp=0.1)
    # student views 0,1 = teacher views 1,0 swapped -> every pair compares identical logits
    _, stats = loss_fn(torch.cat([x[2:], x[:2]]), x, 0)
    assert stats.kl == pytest.approx(0.0, abs=1e-5)
    _, stats = loss_fn(torch.randn(6, 6), x, 0)
    assert stats.kl > 0
