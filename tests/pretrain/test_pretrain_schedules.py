"""Schedules and the teacher EMA against closed forms."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from pretrain.loop import ema_update
from pretrain.schedules import Schedules, cosine_schedule, teacher_temperature


def test_cosine_schedule_closed_form():
    total, warm = 100, 10
    for step in (0, 5, 9):
        assert cosine_schedule(step, total, 1.0, 0.1, warmup_steps=warm) == pytest.approx(step / 10)
    assert cosine_schedule(10, total, 1.0, 0.1, warmup_steps=warm) == pytest.approx(1.0)
    mid = 10 + 45
    assert cosine_schedule(mid, total, 1.0, 0.1, warmup_steps=warm) == pytest.approx(0.55)
    for step in (20, 70, 99):
        t = (step - warm) / 90
        expected = 0.1 + 0.45 * (1 + math.cos(math.pi * t))
        assert cosine_schedule(step, total, 1.0, 0.1, warmup_steps=warm) == pytest.approx(expected)
    assert cosine_schedule(100, total, 1.0, 0.1, warmup_steps=warm) == pytest.approx(0.1)


def test_run_schedules_match_dino():
    s = Schedules(steps_per_epoch=10, epochs=10, lr=1e-3, min_lr=1e-6, warmup_epochs=2,
                  weight_decay=0.04, weight_decay_end=0.4, momentum_teacher=0.996)
    assert s.lr_at(0) == 0.0 and s.lr_at(20) == pytest.approx(1e-3)
    assert s.wd_at(0) == pytest.approx(0.04) and s.wd_at(100) == pytest.approx(0.4)
    assert s.momentum_at(0) == pytest.approx(0.996) and s.momentum_at(100) == pytest.approx(1.0)
    ms = [s.momentum_at(i) for i in range(101)]
    assert all(a <= b for a, b in itertools.pairwise(ms))


def test_teacher_temperature_warmup_is_linear_then_constant():
    temps = [teacher_temperature(e, 0.04, 0.07, 4) for e in range(6)]
    assert temps == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.07, 0.07])


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
