"""The notebook API as a notebook user calls it: no CLI, models in memory, one call each."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from dinoeval import api
from dinoeval.errors import DinoevalError
from dinoeval.results import COLUMNS

TRAIN, VAL = "digits:train[:150]", "digits:test[:60]"


class TokenViT(torch.nn.Module):
    """A tiny timm ViT whose forward returns all tokens (B, 1 + P, D), CLS first."""

    def __init__(self) -> None:
        super().__init__()
        self.vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=16,
                                     patch_size=8, embed_dim=32, depth=1, num_heads=2,
                                     num_classes=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit.forward_features(x)


@pytest.fixture(scope="module")
def token_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TokenViT()


def test_knn_of_an_in_memory_token_model_and_a_spec_in_one_call(token_model):
    ev = api.knn({"tiny": token_model, "pixels": "pixels"}, train=TRAIN, val=VAL, k=(5, 10),
                 img_size=16, progress=False)
    assert list(ev.frame.columns) == list(COLUMNS)
    assert set(ev.frame["backbone"]) == {"tiny", "pixels"}
    r = ev.results["tiny"]
    assert r.n_train == 150 and r.n_test == 60 and 0 <= r.top1[5] <= 1
    assert ev.results["pixels"].top1[5] > 0.8  # digits are easy for raw pixels
    assert ev.features["tiny"][0][0].shape == (150, 32)
    assert "| tiny |" in ev.table("markdown")


def test_linear_of_a_model_that_returns_only_cls():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 24))
    ev = api.linear(model, train=TRAIN, val=VAL, img_size=16, epochs=3,
                    learning_rates=(0.01, 0.1), weight_decays=(0.0,), progress=False)
    (label,) = ev.results
    res = ev.results[label]
    assert res.weight.shape[1] == 24 and res.confusion.sum() == 60
    top1 = ev.frame.query("metric == 'top1'")
    assert len(top1) == 1 and top1["param"].iloc[0] == "" and top1["value"].iloc[0] > 0.5


def test_collapse_of_an_in_memory_model(token_model):
    ev = api.collapse({"tiny": token_model}, data=TRAIN, img_size=16, progress=False)
    res = ev.results["tiny"]
    assert res.stats.singular_values.shape == (32,)
    assert 1 <= res.stats.rankme <= 32 and res.neural_collapse.nc1 > 0
    assert {"rankme", "nc1"} <= set(ev.frame["metric"])


def test_feature_arrays_and_tensors_directly():
    rng = np.random.default_rng(0)
    y = np.arange(90) % 3
    x = rng.normal(size=(90, 8)).astype(np.float32) + 5 * np.eye(8)[y]
    ev = api.knn({"a": ((x[:60], y[:60]), (x[60:], y[60:]))}, k=5)
    assert ev.results["a"].top1[5] == pytest.approx(1.0)
    images = torch.as_tensor(x).reshape(90, 2, 2, 2)
    model = torch.nn.Flatten()
    ev = api.clusters(model, data=(images, y), k=3, seeds=(0,), progress=False)
    assert ev.results["Flatten"].mean("nmi") > 0.9
    with pytest.raises(DinoevalError, match="unknown option"):
        api.knn(model, train=(images, y), val=(images, y), bogus=1)
    with pytest.raises(DinoevalError, match=r"spec string, a torch\.nn\.Module"):
        api.knn(42, train=TRAIN)
