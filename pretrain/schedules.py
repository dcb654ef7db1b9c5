"""DINO's schedules as closed-form functions of the step (or epoch), so resuming needs no state.

They equal the official DINO ``utils.cosine_scheduler`` step for step: a warm-up of
``warmup_steps`` values ``np.linspace(warmup_start, base, warmup_steps)`` (``warmup_start`` at
step 0, ``base`` already at step ``warmup_steps - 1``), then ``final + (base - final) *
(1 + cos(pi * i / n)) / 2`` for ``i = 0 .. n - 1`` over the ``n = total - warmup`` remaining steps.
The teacher temperature is the official ``DINOLoss`` schedule: ``np.linspace(warmup, final,
warmup_epochs)`` per epoch, then constant. ``tests/pretrain/test_pretrain_schedules.py`` checks
every step of each against those formulas.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine_schedule(step: int, total_steps: int, base: float, final: float, *,
                    warmup_steps: int = 0, warmup_start: float = 0.0) -> float:
    """Value at ``step`` (0-based) of warm-up then cosine from ``base`` to ``final``.

    Steps past ``total_steps`` stay at ``final`` (the official array has no such entries).
    """
    if step < warmup_steps:  # np.linspace(warmup_start, base, warmup_steps)[step]
        return warmup_start + (base - warmup_start) * step / max(warmup_steps - 1, 1)
    span = max(total_steps - warmup_steps, 1)
    t = min(step - warmup_steps, span) / span
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * t))


def teacher_temperature(epoch: int, warmup: float, final: float, warmup_epochs: int) -> float:
    """Teacher temperature: linear from ``warmup`` (epoch 0) to ``final`` (epoch
    ``warmup_epochs - 1``), then constant (the official ``np.linspace`` warm-up)."""
    if epoch >= warmup_epochs:
        return final
    return warmup + (final - warmup) * epoch / max(warmup_epochs - 1, 1)


@dataclass(frozen=True)
class Schedules:
    """Per-step learning rate, weight decay and teacher momentum of a run.

    Args:
        steps_per_epoch, epochs: define the total number of steps.
        lr: peak learning rate (already scaled by batch size); ``min_lr`` its end.
        warmup_epochs: linear learning-rate warm-up from 0, reaching ``lr`` at the last warm-up
            step (as the official ``np.linspace``).
        weight_decay, weight_decay_end: cosine weight-decay schedule (no warm-up).
        momentum_teacher: start of the cosine teacher-momentum schedule to 1.
    """

    steps_per_epoch: int
    epochs: int
    lr: float
    min_lr: float
    warmup_epochs: int
    weight_decay: float
    weight_decay_end: float
    momentum_teacher: float

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.epochs

    def lr_at(self, step: int) -> float:
        return cosine_schedule(step, self.total_steps, self.lr, self.min_lr,
                               warmup_steps=self.warmup_epochs * self.steps_per_epoch)

    def wd_at(self, step: int) -> float:
        return cosine_schedule(step, self.total_steps, self.weight_decay, self.weight_decay_end)

    def momentum_at(self, step: int) -> float:
        return cosine_schedule(step, self.total_steps, self.momentum_teacher, 1.0)
