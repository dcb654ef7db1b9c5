"""Linear probes on cached features, selected on a held-out split of the TRAIN set.

Two modes, one selection rule:

* ``grid`` (the DINOv2 protocol on cached features): one linear head per (learning rate, weight
  decay) pair, all trained together by SGD with momentum and a cosine schedule from the same
  mini-batches — the heads are the columns of one ``(D, H·C)`` matrix, so a step is two matrix
  products whatever the grid size.
* ``logreg`` (DINOv2's logistic-regression protocol): multinomial logistic regression by full-batch
  L-BFGS over a sweep of the inverse regularisation ``C`` (scikit-learn's meaning:
  ``mean CE + ‖W‖² / (2·C·N)``), warm-started from the previous ``C``.

Selection: a stratified, seeded ``val_fraction`` of the train set is held out; every setting is
fit on the rest and scored by top-1 on the held-out part; the best one (ties: first in grid order)
is refit on the whole train set (``refit=True``) and only then scored on the test set. The test
set never influences the choice.

Features are standardised per dimension with the train set's mean and std (``standardize=True``)
so one grid serves every backbone; the returned ``weight``/``bias`` act on the *raw* features
(standardisation folded in), ready for NC3/NC4.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from dinoeval.checks import option
from dinoeval.errors import DinoevalError
from dinoeval.eval._validation import check_features, check_finite, check_labels, check_same_dim
from dinoeval.eval.knn import confusion_matrix
from dinoeval.results import Row

log = logging.getLogger(__name__)

# 13 rates in DINOv2's 1-2-5 steps, shifted one decade up from its 1e-5..0.1: on standardised
# cached features the smallest rates never win within 10 epochs and the best sit near 0.01-0.05.
DEFAULT_LRS = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0)
DEFAULT_WDS = (0.0, 1e-4, 1e-3)
DEFAULT_CS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 1.0)


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig:
    """How a linear probe is trained and selected (see the module docstring).

    Attributes:
        mode: ``grid`` (SGD heads over ``learning_rates`` × ``weight_decays``) or ``logreg``
            (L-BFGS over ``cs``).
        learning_rates, weight_decays: the grid of the ``grid`` mode.
        epochs, batch_size, momentum: SGD schedule (cosine decay to 0, no warm-up); the rates
            are per 256 samples and scale linearly with ``batch_size`` (DINOv2's rule).
        cs: inverse regularisation strengths of the ``logreg`` mode.
        max_iter: L-BFGS iterations per ``C``.
        val_fraction: share of each train class held out for selection.
        standardize: z-score features with the train set's per-dim mean and std.
        refit: refit the chosen setting on the whole train set before testing.
        seed: split, shuffling and initialisation seed.
    """

    mode: str = option("grid", help="grid: SGD heads over learning rates x weight decays "
                       "(DINOv2); logreg: L-BFGS over C.")
    learning_rates: tuple[float, ...] = option(
        DEFAULT_LRS, help="Learning rates (per 256 samples).", flag="--lr",
        shown="13 from 1e-4 to 1")
    weight_decays: tuple[float, ...] = option(DEFAULT_WDS, help="Weight decays.", flag="--wd")
    epochs: int = option(10, help="SGD epochs over the cached features.")
    batch_size: int = 1024
    momentum: float = 0.9
    cs: tuple[float, ...] = option(DEFAULT_CS, help="logreg inverse regularisation C.",
                                   flag="--c", shown="7 from 1e-4 to 1")
    max_iter: int = 100
    val_fraction: float = option(
        0.1, help="Share of each train class held out to pick the setting.")
    standardize: bool = True
    refit: bool = True
    seed: int = option(0, help="Seed of every random choice (split, sampling).")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in ("grid", "logreg"):
            raise DinoevalError(f"linear probe mode must be 'grid' or 'logreg', got {self.mode!r}")
        if self.mode == "grid" and (not self.learning_rates or not self.weight_decays):
            raise DinoevalError("the grid probe needs at least one learning rate and weight decay")
        if self.mode == "logreg" and not self.cs:
            raise DinoevalError("the logreg probe needs at least one C")
        if any(v <= 0 for v in (*self.learning_rates, *self.cs)) or any(
                v < 0 for v in self.weight_decays):
            raise DinoevalError("learning rates and C must be > 0, weight decays >= 0")
        if not 0 < self.val_fraction < 1:
            raise DinoevalError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")
        for name, value in (("--epochs", self.epochs), ("batch_size", self.batch_size),
                            ("max_iter", self.max_iter)):
            if value < 1:
                raise DinoevalError(f"{name} of the linear probe must be >= 1, got {value}")
        if self.seed < 0:
            raise DinoevalError(f"--seed must be >= 0, got {self.seed}")


@dataclass(frozen=True, eq=False)
class LinearProbeResult:
    """A selected linear probe and its test accuracy.

    Attributes:
        mode: ``grid`` or ``logreg``.
        top1, top5: test accuracy in [0, 1] of the chosen setting (top-5 is top-min(5, C)).
        chosen: the chosen setting, e.g. ``{"lr": 0.01, "wd": 0.0}`` or ``{"C": 0.1}``.
        val_top1: ``(setting text, held-out top-1)`` for every setting, in grid order.
        weight: ``(C, D)`` float32 classifier on the raw features: ``logits = x Wᵀ + b``.
        bias: ``(C,)`` float32.
        predictions: ``(N_test,)`` int64 predicted classes.
        n_fit, n_val, n_test: samples used to fit during selection, to select, to test.
        confusion: ``(C, C)`` test counts, row = true class, column = prediction.
    """

    mode: str
    top1: float
    top5: float
    chosen: dict[str, float]
    val_top1: tuple[tuple[str, float], ...]
    weight: np.ndarray = field(repr=False)
    bias: np.ndarray = field(repr=False)
    predictions: np.ndarray = field(repr=False)
    n_fit: int
    n_val: int
    n_test: int
    confusion: np.ndarray | None = field(default=None, repr=False)

    @property
    def chosen_text(self) -> str:
        return _setting_text(self.chosen)

    def to_rows(self) -> list[Row]:
        e = f"linear-{self.mode}"
        best_val = dict(self.val_top1)[self.chosen_text]
        # The chosen setting is metadata of the scores (chosen_* rows), not part of their key:
        # backbones that chose different settings share one "top1" column in a paper table.
        rows = [
            Row(e, "top1", self.top1, "", self.n_test),
            Row(e, "top5", self.top5, "", self.n_test),
            Row(e, "val_top1_chosen", best_val, "", self.n_val),
        ]
        rows += [Row(e, f"chosen_{k}", float(v), "", self.n_val) for k, v in self.chosen.items()]
        rows += [Row(e, "val_top1", v, p, self.n_val) for p, v in self.val_top1]
        return rows

    def logits(self, features: np.ndarray) -> np.ndarray:
        """``(N, C)`` logits of raw ``(N, D)`` features."""
        return np.asarray(features, dtype=np.float32) @ self.weight.T + self.bias


def _setting_text(setting: dict[str, float]) -> str:
    return ",".join(f"{k}={v:g}" for k, v in setting.items())


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray,
                                                                                np.ndarray]:
    """Seeded ``(fit_idx, val_idx)``: ``round(fraction · n_c)`` of each class c with ``n_c ≥ 2``
    (at least one) goes to ``val``; both index arrays sorted."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            continue
        k = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        val.append(rng.permutation(idx)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if len(val_idx) == 0:
        raise DinoevalError("no class has 2 train samples: nothing can be held out for selection")
    fit = np.ones(len(labels), dtype=bool)
    fit[val_idx] = False
    return np.flatnonzero(fit), val_idx


def _topk_accuracy(logits: torch.Tensor, y: torch.Tensor, k: int) -> tuple[float, float]:
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return float((top[:, 0] == y).double().mean()), float((top == y[:, None]).any(1).double().mean())


def train_sgd_heads(x: torch.Tensor, y: torch.Tensor, num_classes: int, lrs: torch.Tensor,
                    wds: torch.Tensor, *, epochs: int, batch_size: int, momentum: float,
                    generator: torch.Generator,
                    on_epoch: Callable[[int], None] | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Train H softmax heads at once with SGD + momentum and a cosine learning rate.

    Args:
        x: ``(N, D)`` float32 features; y: ``(N,)`` int64 labels.
        lrs, wds: ``(H,)`` learning rate and L2 weight decay of each head.

    Returns:
        ``W (D, H, C)`` and ``b (H, C)``; a head that diverged has non-finite entries.
    """
    n, d = x.shape
    h, c = len(lrs), num_classes
    w = torch.zeros(d, h * c, dtype=x.dtype, device=x.device)
    b = torch.zeros(h * c, dtype=x.dtype, device=x.device)
    mw, mb = torch.zeros_like(w), torch.zeros_like(b)
    lr_col = lrs.to(x).repeat_interleave(c)
    wd_col = wds.to(x).repeat_interleave(c)
    onehot = torch.nn.functional.one_hot(y, c).to(x.dtype)
    total, step = epochs * math.ceil(n / batch_size), 0
    for epoch in range(epochs):
        # One gather per epoch, then contiguous mini-batches (cheaper than a gather per step).
        perm = torch.randperm(n, generator=generator).to(x.device)
        xp, yp = x[perm], onehot[perm]
        for s in range(0, n, batch_size):
            xb, yb = xp[s : s + batch_size], yp[s : s + batch_size]
            logits = torch.addmm(b, xb, w).view(len(xb), h, c)
            g = torch.softmax(logits, dim=2).sub_(yb[:, None, :])
            g = g.view(len(xb), h * c).div_(len(xb))
            gw = torch.addmm(w * wd_col, xb.T, g)
            scale = 0.5 * (1.0 + math.cos(math.pi * step / total))
            mw.mul_(momentum).add_(gw)
            mb.mul_(momentum).add_(g.sum(0))
            w.addcmul_(mw, lr_col, value=-scale)
            b.addcmul_(mb, lr_col, value=-scale)
            step += 1
        del xp, yp
        if on_epoch:
            on_epoch(epoch + 1)
    return w.view(d, h, c), b.view(h, c)


def fit_logreg(x: torch.Tensor, y: torch.Tensor, num_classes: int, c_reg: float, *,
               max_iter: int, init: tuple[torch.Tensor, torch.Tensor] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression ``min mean CE + ‖W‖²/(2·C·N)`` by full-batch L-BFGS.

    Args:
        x: ``(N, D)``; y: ``(N,)``; c_reg: C (scikit-learn's meaning).
        init: warm start ``(W (D, C), b (C,))``.

    Returns:
        ``W (D, C)`` and ``b (C,)``.
    """
    n, d = x.shape
    if init is None:
        w = torch.zeros(d, num_classes, dtype=x.dtype, device=x.device)
        b = torch.zeros(num_classes, dtype=x.dtype, device=x.device)
    else:
        w, b = init[0].clone(), init[1].clone()
    w.requires_grad_(True)
    b.requires_grad_(True)
    reg = 1.0 / (2.0 * c_reg * n)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-10,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(torch.addmm(b, x, w), y) + reg * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    config: LinearProbeConfig | None = None,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[int], None] | None = None,
) -> LinearProbeResult:
    """Select a linear probe on a held-out split of the train set; report it on the test set.

    Args:
        train_x: ``(N, D)`` train features; train_y: ``(N,)`` labels in ``[0, C)``, every class
            present.
        test_x: ``(M, D)`` test features; test_y: ``(M,)`` labels in ``[0, C)``.
        config: :class:`LinearProbeConfig` (defaults: 13 rates × 3 decays, 10 epochs).
        num_classes: C (default ``max(label) + 1``).
        device: where the heads train.
        on_epoch: progress callback: in grid mode called after every SGD epoch with its number;
            in logreg mode after every fitted C (and the refit) with the number of fits done.
    """
    cfg = config or LinearProbeConfig()
    cfg.validate()
    xtr, xte = check_features(train_x, "train features"), check_features(test_x, "test features")
    check_same_dim(xtr, xte)
    c = max(int(np.max(train_y)), int(np.max(test_y))) + 1 if len(test_y) else None
    ytr, c = check_labels(train_y, len(xtr), num_classes or c, name="train labels")
    yte, _ = check_labels(test_y, len(xte), c, name="test labels", need_all_classes=False)
    check_finite(xtr, "train features")
    check_finite(xte, "test features")
    fit_idx, val_idx = stratified_split(ytr, cfg.val_fraction, cfg.seed)

    dev = torch.device(device)
    x = torch.as_tensor(np.asarray(xtr, dtype=np.float32), device=dev)
    mu = x.mean(0) if cfg.standardize else torch.zeros(x.shape[1], device=dev)
    sd = x.std(0).clamp_min(1e-6) if cfg.standardize else torch.ones(x.shape[1], device=dev)
    x = (x - mu) / sd
    y = torch.as_tensor(ytr, device=dev)
    fit_t, val_t = torch.as_tensor(fit_idx, device=dev), torch.as_tensor(val_idx, device=dev)
    gen = torch.Generator().manual_seed(cfg.seed)

    if cfg.mode == "grid":
        settings = [{"lr": lr, "wd": wd} for wd in cfg.weight_decays for lr in cfg.learning_rates]
        lrs = torch.tensor([s["lr"] * cfg.batch_size / 256 for s in settings])
        wds = torch.tensor([s["wd"] for s in settings], dtype=torch.float32)

        def train(rows: torch.Tensor, sel: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            return train_sgd_heads(x[rows], y[rows], c, lrs[sel], wds[sel], epochs=cfg.epochs,
                                   batch_size=cfg.batch_size, momentum=cfg.momentum,
                                   generator=gen, on_epoch=on_epoch)

        w_all, b_all = train(fit_t, list(range(len(settings))))
        val_logits = torch.einsum("nd,dhc->nhc", x[val_t], w_all) + b_all
        val_acc = [_head_accuracy(val_logits[:, i], y[val_t]) for i in range(len(settings))]
        best = _best(val_acc)
        w, b = (train(torch.arange(len(x), device=dev), [best]) if cfg.refit
                else (w_all[:, best : best + 1], b_all[best : best + 1]))
        w, b = w[:, 0], b[0]
    else:
        settings = [{"C": cv} for cv in sorted(cfg.cs)]
        val_acc, fits, init = [], [], None
        for i, s in enumerate(settings, 1):
            init = fit_logreg(x[fit_t], y[fit_t], c, s["C"], max_iter=cfg.max_iter, init=init)
            fits.append(init)
            val_acc.append(_head_accuracy(x[val_t] @ init[0] + init[1], y[val_t]))
            if on_epoch is not None:
                on_epoch(i)
        best = _best(val_acc)
        w, b = (fit_logreg(x, y, c, settings[best]["C"], max_iter=cfg.max_iter, init=fits[best])
                if cfg.refit else fits[best])
        if on_epoch is not None and cfg.refit:
            on_epoch(len(settings) + 1)
    if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
        raise DinoevalError("the chosen linear probe diverged; lower the learning rates")

    # Fold the standardisation into the classifier: (x - mu)/sd @ w + b = x @ (w/sd) + b'.
    w_raw = w / sd[:, None]
    b_raw = b - mu @ w_raw
    xt = torch.as_tensor(np.asarray(xte, dtype=np.float32), device=dev)
    test_logits = xt @ w_raw + b_raw
    top1, top5 = _topk_accuracy(test_logits, torch.as_tensor(yte, device=dev), 5)
    return LinearProbeResult(
        mode=cfg.mode, top1=top1, top5=top5, chosen=settings[best],
        val_top1=tuple((_setting_text(s), v) for s, v in zip(settings, val_acc, strict=True)),
        weight=w_raw.T.contiguous().cpu().numpy(), bias=b_raw.cpu().numpy(),
        predictions=(pred := test_logits.argmax(1).cpu().numpy().astype(np.int64)),
        n_fit=len(fit_idx), n_val=len(val_idx), n_test=len(yte),
        confusion=confusion_matrix(pred, np.asarray(yte), w_raw.shape[1]))


def _head_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 of ``(N, C)`` logits; NaN for a head that diverged (never selected)."""
    if not torch.isfinite(logits).all():
        return math.nan
    return float((logits.argmax(1) == y).double().mean())


def _best(val_acc: list[float]) -> int:
    """Index of the highest held-out accuracy, ties to the first in grid order."""
    acc = np.asarray(val_acc, dtype=np.float64)
    if np.isnan(acc).all():
        raise DinoevalError("every linear head diverged; lower the learning rates")
    return int(np.nanargmax(acc))
