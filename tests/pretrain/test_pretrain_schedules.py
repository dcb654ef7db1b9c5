"""Schedules and the teacher EMA against closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from pretrain.loss import DINOLoss
from pretrain.schedules import Schedules, cosine_schedule, teacher_temperature
from pretrain.step import ema_update


def official_cosine(base: float, final: float, epochs: int, niter_per_ep: int,
                    warmup_epochs: int = 0, start_warmup_value: float = 0.0) -> np.ndarray:
    """The official DINO ``utils.cosine_scheduler`` formula (one value per iteration): a
    ``np.linspace`` warm-up, then ``final + (base - final)(1 + cos(pi i / n)) / 2``, i < n."""
    warm = warmup_epochs * niter_per_ep
    head = np.linspace(start_warmup_value, base, warm) if warmup_epochs > 0 else np.array([])
    n = epochs * niter_per_ep - warm
    i = np.arange(n)
    return np.concatenate([head, final + 0.5 * (base - final) * (1 + np.cos(np.pi * i / n))])


def official_teacher_temp(warmup: float, final: float, warmup_epochs: int,
                          epochs: int) -> np.ndarray:
    """The official ``DINOLoss.teacher_temp_schedule`` (one value per epoch)."""
    return np.concatenate([np.linspace(warmup, final, warmup_epochs),
                           np.ones(epochs - warmup_epochs) * final])


RUNS = [  # (steps_per_epoch, epochs, warmup_epochs)
    (10, 10, 2), (7, 5, 1), (1, 12, 3), (3, 4, 0), (1, 3, 1), (25, 3, 2),
]


@pytest.mark.parametrize(("spe", "epochs", "warmup"), RUNS)
def test_every_step_of_lr_wd_momentum_equals_the_official_cosine_scheduler(spe, epochs, warmup):
    s = Schedules(steps_per_epoch=spe, epochs=epochs, lr=1e-3, min_lr=1e-6,
                  warmup_epochs=warmup, weight_decay=0.04, weight_decay_end=0.4,
                  momentum_teacher=0.996)
    steps = range(s.total_steps)
    np.testing.assert_allclose([s.lr_at(i) for i in steps],
                               official_cosine(1e-3, 1e-6, epochs, spe, warmup_epochs=warmup),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose([s.wd_at(i) for i in steps], official_cosine(0.04, 0.4, epochs, spe),
                               rtol=1e-12, atol=0)
    np.testing.assert_allclose([s.momentum_at(i) for i in steps],
                               official_cosine(0.996, 1.0, epochs, spe), rtol=1e-12, atol=0)
    w = warmup * spe
    if w > 1:  # the peak is reached at the last warm-up step, as np.linspace does
        assert s.lr_at(w - 1) == pytest.approx(1e-3, rel=1e-12) and s.lr_at(0) == 0.0


def test_warmup_start_value_and_steps_past_the_end():
    ref = official_cosine(1.0, 0.1, 4, 5, warmup_epochs=2, start_warmup_value=0.5)
    got = [cosine_schedule(i, 20, 1.0, 0.1, warmup_steps=10, warmup_start=0.5) for i in range(20)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    assert cosine_schedule(20, 20, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)
    assert cosine_schedule(500, 20, 1.0, 0.1, warmup_steps=10) == pytest.approx(0.1)


def test_run_schedules_are_monotone_after_warmup():
    s = Schedules(steps_per_epoch=10, epochs=10, lr=1e-3, min_lr=1e-6, warmup_epochs=2,
                  weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.996)
    ms = [s.momentum_at(i) for i in range(101)]
    assert all(a <= b for a, b in itertools.pairwise(ms))
    lrs = [s.lr_at(i) for i in range(19, 100)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


@pytest.mark.parametrize(("warmup_epochs", "epochs"), [(4, 6), (1, 3), (0, 3), (30, 100), (5, 5)])
def test_teacher_temperature_equals_the_official_schedule(warmup_epochs, epochs):
    ref = official_teacher_temp(0.04, 0.07, warmup_epochs, epochs)
    got = [teacher_temperature(e, 0.04, 0.07, warmup_epochs) for e in range(epochs)]
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    loss = DINOLoss(8, warmup_teacher_temp=0.04, teacher_temp=0.07,
                    warmup_teacher_temp_epochs=warmup_epochs, epochs=epochs)
    np.testing.assert_allclose([loss.teacher_temp(e) for e in range(epochs)], ref, rtol=1e-12)


def test_ema_update_closed_form():
    teacher, student = nn.Linear(3, 2), nn.Linear(3, 2)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    s0 = [p.detach().clone() for p in student.parameters()]
    ema_update(teacher, student, 0.9)
    for t, a, b in zip(teacher.parameters(), t0, s0, strict=True):
        torch.testing.assert_close(t.detach(), 0.9 * a + 0.1 * b)
    ema_update(teacher, student, 1.0)  # momentum 1 freezes the teacher
    for t, a, b in zip(teacher.parameters(), t0, s0, strict=True):
        torch.testing.assert_close(t.detach(), 0.9 * a + 0.1 * b)
