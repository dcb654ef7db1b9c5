"""The DINO loss: cross-entropy from the centred, sharpened teacher to the student.

For teacher global view ``i`` and student view ``v != i``::

    P_t = softmax((t_i - c) / tau_t),  log P_s = log_softmax(s_v / tau_s),  loss = mean -P_t . log P_s

averaged over all such pairs. The center ``c`` is an EMA of the teacher's batch-mean logits
(all-reduced over ranks when a process group exists). ``centering=False`` never subtracts (nor
updates) it; ``sharpening=False`` gives the teacher the student's temperature. The paper's Fig. 7
says the first collapses to one dimension and the second to the uniform distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from pretrain.schedules import teacher_temperature


@dataclass(frozen=True)
class LossStats:
    """Monitoring numbers of one step (floats, averaged over the local batch).

    Attributes:
        loss: the DINO loss.
        teacher_entropy: mean entropy of ``P_t`` in nats (``log K`` is uniform, 0 is one-hot).
        kl: mean ``KL(P_t || P_s)`` over the loss pairs (``loss - teacher_entropy``).
        center_norm: L2 norm of the center after the update.
        teacher_temp: the teacher temperature used.
    """

    loss: float
    teacher_entropy: float
    kl: float
    center_norm: float
    teacher_temp: float


class DINOLoss(nn.Module):
    """DINO loss with its center as a buffer (saved as ``dino_loss.center``, shape ``(1, K)``).

    Args:
        out_dim: K.
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, epochs: the teacher
            temperature schedule (linear warm-up, then constant).
        student_temp: tau_s.
        center_momentum: EMA momentum of the center.
        centering, sharpening: the collapse-ablation switches.
    """

    def __init__(self, out_dim: int, *, warmup_teacher_temp: float = 0.04,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: int = 30,
                 epochs: int = 100, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: bool = True, sharpening: bool = True) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.centering, self.sharpening = centering, sharpening
        self.warmup_teacher_temp, self.final_teacher_temp = warmup_teacher_temp, teacher_temp
        self.warmup_teacher_temp_epochs, self.epochs = warmup_teacher_temp_epochs, epochs
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temp(self, epoch: int) -> float:
        """tau_t at ``epoch`` (the student's temperature when sharpening is off)."""
        if not self.sharpening:
            return self.student_temp
        return teacher_temperature(epoch, self.warmup_teacher_temp, self.final_teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def forward(self, student_out: torch.Tensor, teacher_out: torch.Tensor, epoch: int
                ) -> tuple[torch.Tensor, LossStats]:
        """Loss and monitoring stats; updates the center.

        Args:
            student_out: ``(V*B, K)`` logits of all V views, view-major.
            teacher_out: ``(2*B, K)`` logits of the 2 global views, view-major.
            epoch: selects the teacher temperature.
        """
        n_global = 2
        views = student_out.shape[0] // (teacher_out.shape[0] // n_global)
        temp = self.teacher_temp(epoch)
        t = teacher_out.detach().float()
        if self.centering:
            t = t - self.center
        p_t = F.softmax(t / temp, dim=-1)
        logp_s = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
        p_t_chunks = p_t.chunk(n_global)
        logp_s_chunks = logp_s.chunk(views)
        total = student_out.new_zeros((), dtype=torch.float32)
        pairs = 0
        for i, pt in enumerate(p_t_chunks):
            for v, ls in enumerate(logp_s_chunks):
                if v == i:
                    continue
                total = total + torch.sum(-pt * ls, dim=-1).mean()
                pairs += 1
        loss = total / pairs
        with torch.no_grad():
            entropy = -(p_t * torch.log(p_t.clamp_min(1e-30))).sum(-1).mean()
            if self.centering:
                self.update_center(teacher_out)
        value = float(loss.detach())
        stats = LossStats(loss=value, teacher_entropy=float(entropy),
                          kl=value - float(entropy), center_norm=float(self.center.norm()),
                          teacher_temp=temp)
        return loss, stats

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean(teacher_out)`` with the mean over every rank's batch."""
        batch_sum = teacher_out.float().sum(dim=0, keepdim=True)
        count = torch.tensor([float(teacher_out.shape[0])], device=batch_sum.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_sum)
            dist.all_reduce(count)
        batch_center = batch_sum / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))
