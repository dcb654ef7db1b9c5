"""DINO's schedules as closed-form functions of the step (or epoch), so resuming needs no state.

They match the official ``cosine_scheduler``: a linear warm-up over ``warmup_steps`` from
``warmup_start`` to ``base``, then a half cosine from ``base`` down (or up) to ``final`` over the
remaining steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def cosine_schedule(step: int, total_steps: int, base: float, final: float, *,
                    warmup_steps: int = 0, warmup_start: float = 0.0) -> float:
    """Value at ``step`` (0-based) of warm-up then cosine from ``base`` to ``final``."""
    if step < warmup_steps:
        return warmup_start + (base - warmup_start) * step / warmup_steps
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
        warmup_epochs: linear learning-rate warm-up from 0.
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
