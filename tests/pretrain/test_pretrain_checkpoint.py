"""Checkpoints: official layout, weights_only, atomic writes, and dinoeval's loader reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dinoeval.errors import DinoevalError
from dinoeval.models import load_backbone
from pretrain.checkpoint import atomic_write, load_checkpoint
from pretrain.loop import train_loop
from pretrain.step import build_models


def _run(tmp_path: Path, tiny_config, **kw) -> Path:
    out = tmp_path / "run"
    train_loop(tiny_config(epochs=1, **kw), out)
    return out


def test_checkpoint_has_the_official_layout_and_loads_weights_only(tmp_path, tiny_config):
    out = _run(tmp_path, tiny_config)
    ckpt = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)
    for key in ("student", "teacher", "optimizer", "epoch", "dino_loss", "config", "step", "rng"):
        assert key in ckpt
    assert ckpt["epoch"] == 1 and ckpt["step"] == 4
    for net in ("student", "teacher"):
        keys = ckpt[net].keys()
        assert all(k.startswith(("backbone.", "head.")) for k in keys)
        assert "backbone.cls_token" in keys and "backbone.blocks.0.attn.qkv.weight" in keys
        assert "head.last_layer.weight_g" in keys and "head.mlp.0.weight" in keys
    assert ckpt["dino_loss"]["center"].shape == (1, 64)
    cfg = ckpt["config"]
    assert (cfg["embed_dim"], cfg["depth"], cfg["num_heads"], cfg["patch_size"],
            cfg["img_size"]) == (32, 2, 2, 4, 8)
    assert ckpt["rng"]["cpu"].dtype == torch.uint8 and ckpt["rng"]["cpu"].shape[0] == 1
    assert (out / "backbone.safetensors").exists()


@pytest.mark.parametrize("key", ["teacher", "student"])
def test_dinoeval_loader_reads_the_checkpoint_with_identical_outputs(tmp_path, tiny_config, key):
    out = _run(tmp_path, tiny_config)
    ckpt = load_checkpoint(out)
    ours, _ = build_models(tiny_config().resolved((8, 8)))
    net = ours  # the same architecture, with the saved weights of ``key``
    net.load_state_dict(ckpt[key])
    net.eval()
    bb = load_backbone(str(out / "checkpoint.pth"), checkpoint_key=key)
    assert bb.arch is not None and bb.arch.embed_dim == 32 and bb.arch.num_heads == 2
    assert bb.arch.patch_size == 4 and bb.arch.img_size == (8, 8)
    assert bb.head is not None and bb.center is not None
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(bb.model(x), net.backbone(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(bb.head(bb.model(x)), net(x), rtol=1e-5, atol=1e-5)
    if key == "teacher":  # the directory and the backbone-only export resolve to the teacher
        for spec in (str(out), str(out / "backbone.safetensors")):
            other = load_backbone(spec, num_heads=2)
            with torch.no_grad():
                torch.testing.assert_close(other.model(x), net.backbone(x), rtol=1e-5, atol=1e-5)


def test_atomic_write_never_leaves_a_partial_file(tmp_path):
    path = tmp_path / "f.pth"
    atomic_write(path, lambda tmp: torch.save({"v": torch.ones(3)}, tmp))

    def crash(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a checkpoint")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        atomic_write(path, crash)
    assert torch.load(path, weights_only=True)["v"].sum() == 3
    assert [p.name for p in tmp_path.iterdir()] == ["f.pth"]


def test_stale_temp_files_are_ignored_and_non_runs_rejected(tmp_path, tiny_config):
    out = _run(tmp_path, tiny_config)
    (out / ".checkpoint.pth.abc.tmp").write_bytes(b"garbage")
    assert load_checkpoint(out)["epoch"] == 1
    assert not (out / ".checkpoint.pth.abc.tmp").exists()
    torch.save({"w": torch.zeros(1)}, tmp_path / "plain.pth")
    with pytest.raises(DinoevalError, match="not a pretrain checkpoint"):
        load_checkpoint(tmp_path / "plain.pth")
    with pytest.raises(DinoevalError, match="already holds a run"):
        train_loop(tiny_config(epochs=1), out)


def test_backbone_export_carries_the_arch_as_metadata(tmp_path, tiny_config):
    from safetensors import safe_open

    out = _run(tmp_path, tiny_config)
    with safe_open(str(out / "backbone.safetensors"), "pt") as f:
        meta = f.metadata()
        keys = set(f.keys())
    assert meta["num_heads"] == "2" and meta["embed_dim"] == "32" and meta["network"] == "teacher"
    assert "cls_token" in keys and not any(k.startswith(("backbone.", "head.")) for k in keys)


def test_identical_states_write_byte_identical_backbones(tmp_path, tiny_config):
    from safetensors import safe_open

    from pretrain.checkpoint import BACKBONE_NAME, load_checkpoint, save_checkpoint

    state = load_checkpoint(_run(tmp_path, tiny_config))
    blobs = {save_checkpoint(tmp_path / f"copy{i}", state).with_name(BACKBONE_NAME).read_bytes()
             for i in range(4)}  # safetensors orders its metadata hash map differently each time
    assert len(blobs) == 1
    with safe_open(str(tmp_path / "copy0" / BACKBONE_NAME), framework="pt") as f:
        assert f.metadata()["embed_dim"] == "32" and f.metadata()["network"] == "teacher"
    assert load_backbone(str(tmp_path / "copy0" / BACKBONE_NAME), num_heads=2).model is not None


def test_a_second_run_into_the_same_folder_stops_naming_the_holder(tmp_path, tiny_config):
    import os

    from dinoeval._io import LockHeld

    out, seen = tmp_path / "run", []

    def second_run() -> bool:
        if not seen:
            with pytest.raises(LockHeld) as err:
                train_loop(tiny_config(epochs=1), out)
            seen.append(str(err.value))
        return True

    train_loop(tiny_config(epochs=1), out, should_stop=second_run)
    assert seen and f"run folder {out} is in use by pid {os.getpid()} on host " in seen[0]
    steps = (out / "log.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in steps] == ["step", "1"]  # one row per step, one run
    assert train_loop(tiny_config(epochs=1), out, resume=True).step == 4  # released after


def test_resuming_a_finished_run_says_so(tmp_path, tiny_config):
    out = _run(tmp_path, tiny_config)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".run.lock"}
    result = train_loop(tiny_config(epochs=1), out, resume=True)
    assert result.stop_reason == "already finished (1 epochs, nothing to do)"
    assert result.checkpoint == out / "checkpoint.pth"
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != ".run.lock"} == before


def test_compact_checkpoint_keeps_the_teacher_and_drops_the_rest(tmp_path: Path,
                                                                 seed: int) -> None:
    from dinoeval.models import ViTArch, build_vit
    from pretrain.checkpoint import compact_checkpoint

    arch = ViTArch(embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=(32, 32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = {f"backbone.{k}": v for k, v in build_vit(arch).state_dict().items()}
        student = {f"module.{k}": v + 1 for k, v in teacher.items()}
    full = {"student": student, "teacher": teacher, "optimizer": {"state": {}},
            "dino_loss": {"center": torch.zeros(1, 16)}, "epoch": 3,
            "config": {"num_heads": 2, "arch": "vit_tiny"}}
    torch.save(full, tmp_path / "full.pth")
    small = compact_checkpoint(tmp_path / "full.pth", tmp_path / "small.pth")
    assert small.stat().st_size < 0.4 * (tmp_path / "full.pth").stat().st_size
    a = load_backbone(str(tmp_path / "full.pth"))
    b = load_backbone(str(small))
    assert a.arch == b.arch and b.center is not None and b.meta["epoch"] == 3
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(b.model(x), a.model(x), atol=2e-2, rtol=2e-2)
