"""Shared fixtures: tiny ViTs and tiny in-memory sources (seeds are fixtures, never globals)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dinoeval.data import ArraySource
from dinoeval.models import DINOHead, ViTArch, build_vit

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


def pytest_collection_modifyitems(config, items):
    have_fmnist = (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists()
    have_gpu = torch.cuda.is_available()
    for item in items:
        if "fmnist" in item.keywords and not have_fmnist:
            item.add_marker(pytest.mark.skip(reason="needs apt-get install dataset-fashion-mnist"))
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture
def seed() -> int:
    return 1234


@pytest.fixture
def tiny_arch() -> ViTArch:
    return ViTArch(embed_dim=192, depth=2, num_heads=3, patch_size=4, img_size=(16, 16))


@pytest.fixture
def tiny_vit(tiny_arch: ViTArch, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(tiny_arch).eval()
        # Non-trivial position embeddings and tokens, so layout bugs change the output.
        with torch.no_grad():
            model.pos_embed.normal_(0, 0.5)
            model.cls_token.normal_(0, 0.5)
    return model


def make_source(n: int = 40, size: int = 16, classes: int = 4, seed: int = 0,
                rgb: bool = True, spec: str = "tiny") -> ArraySource:
    rng = np.random.default_rng(seed)
    shape = (n, size, size, 3) if rgb else (n, size, size)
    images = rng.integers(0, 256, size=shape, dtype=np.uint8)
    labels = np.arange(n) % classes
    return ArraySource(images, labels, spec=spec, name=spec, split="all",
                       classes=tuple(f"c{i}" for i in range(classes)))


@pytest.fixture
def tiny_source() -> ArraySource:
    return make_source()


DINO_K = 32


def dino_train_checkpoint(path, vit, *, center_scale: float = 1.0, same_student: bool = False):
    """A DINO training checkpoint: teacher and student (backbone + head) and the loss center."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        t_head = DINOHead(vit.embed_dim, DINO_K, hidden_dim=64, bottleneck_dim=16)
        s_head = t_head if same_student else DINOHead(vit.embed_dim, DINO_K, hidden_dim=64,
                                                      bottleneck_dim=16)
        center = center_scale * torch.randn(1, DINO_K)
    teacher = {**{f"backbone.{k}": v for k, v in vit.state_dict().items()},
               **{f"head.{k}": v for k, v in t_head.state_dict().items()}}
    student = {f"module.{k}": v for k, v in teacher.items()} if same_student else {
        **{f"module.backbone.{k}": v for k, v in vit.state_dict().items()},
        **{f"module.head.{k}": v for k, v in s_head.state_dict().items()}}
    torch.save({"teacher": teacher, "student": student, "dino_loss": {"center": center},
                "epoch": 3}, path)
    return str(path)


@pytest.fixture
def narrow_vit_file(tmp_path) -> str:
    """A width-32, depth-1 ViT (patch 4, 16 px, seed 0) saved as a plain state dict."""
    arch = ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=4, img_size=(16, 16))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_vit(arch)
    p = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), p)
    return str(p)


@pytest.fixture
def dino_ckpt(tmp_path, tiny_vit):
    return dino_train_checkpoint(tmp_path / "dino.pth", tiny_vit)


def attention_vit(reg_tokens: int = 0, seed: int = 0, layer_scale: bool = False):
    """A depth-2, width-64 ViT with seeded non-trivial weights, and its prefix-token count."""
    arch = ViTArch(embed_dim=64, depth=2, num_heads=4, patch_size=4, img_size=(16, 16),
                   reg_tokens=reg_tokens, layer_scale=layer_scale)
    gen = torch.Generator().manual_seed(seed)
    model = build_vit(arch).eval()
    with torch.no_grad():  # non-trivial weights everywhere so layout bugs change the answer
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model, 1 + reg_tokens
