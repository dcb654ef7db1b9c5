"""The online k-NN monitor and the in-memory model contract (CLS, tokens, DINOv2 dicts)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.eval.knn import knn_classify
from dinoeval.features.from_module import cls_and_patches, module_features
from dinoeval.monitor import KnnMonitor, lightning_callback


class Tokens(torch.nn.Module):
    """(B, 1 + P, D) tokens: a CLS token, then 4 patch tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 8 * 8, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls = self.proj(x.flatten(1))
        return torch.stack([cls, *(cls * 0 + i for i in range(4))], dim=1)


def blobs(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    y = np.arange(n) % 3
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    for c in range(3):
        x[y == c, c] += 2.0
    return x, y


def test_contract_accepts_cls_tokens_dicts_and_tuples():
    cls = torch.ones(2, 5)
    toks = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    assert cls_and_patches(cls)[0] is cls and cls_and_patches(cls)[1] is None
    c, p = cls_and_patches(toks, num_registers=1)
    assert torch.equal(c, toks[:, 0]) and torch.equal(p, toks[:, 2:])
    d = {"x_norm_clstoken": cls, "x_norm_patchtokens": toks}
    assert cls_and_patches((d, None))[0] is cls
    with pytest.raises(DinoevalError, match=r"shape \(2, 3, 4, 5\)"):
        cls_and_patches(torch.ones(2, 3, 4, 5))
    with pytest.raises(DinoevalError, match="keys"):
        cls_and_patches({"logits": cls})


def test_monitor_scores_every_n_epochs_as_knn_on_the_same_features():
    torch.manual_seed(0)
    model = Tokens().train()
    bank, queries = blobs(60, 0), blobs(30, 1)
    mon = KnnMonitor(bank=bank, queries=queries, every=2, k=5, batch_size=16)
    got = [mon(model, e) for e in range(4)]
    assert got[1] is None and got[3] is None and [h["epoch"] for h in mon.history] == [0, 2]
    assert model.training  # the pass leaves the mode as it was
    bx, by = module_features(model, bank)
    qx, qy = module_features(model, queries)
    ref = knn_classify(bx, by, qx, qy, ks=(5,))
    assert got[0]["top1"] == pytest.approx(ref.top1[5]) and got[0]["top1"] > 0.9
    df = mon.frame(backbone="tiny")
    assert list(df["param"]) == ["k=5,epoch=0"] * 2 + ["k=5,epoch=2"] * 2
    with pytest.raises(DinoevalError, match="every"):
        KnnMonitor(bank=bank, queries=queries, every=0)


def test_monitor_takes_a_dataloader_and_a_cls_only_model():
    from torch.utils.data import DataLoader, TensorDataset

    x, y = blobs(40, 2)
    loader = DataLoader(TensorDataset(x, torch.as_tensor(y)), batch_size=7)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 8))  # (B, D) only
    entry = KnnMonitor(bank=loader, queries=loader, k=3)(model, 0)
    assert entry["n_bank"] == 40 and entry["top1"] == pytest.approx(1.0)


def test_lightning_callback_logs_when_lightning_is_installed():
    pytest.importorskip("lightning")
    x, y = blobs(30, 3)
    mon = KnnMonitor(bank=(x, y), queries=(x, y), k=3)
    cb = lightning_callback(mon)
    logged = {}

    class Module(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 8))

        def forward(self, x):
            return self.net(x)

        def log(self, name, value):
            logged[name] = value

    class Trainer:
        current_epoch = 0

    cb.on_train_epoch_end(Trainer(), Module())
    assert set(logged) == {"knn_online_top1", "knn_online_top5"}
