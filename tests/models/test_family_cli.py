"""Every command runs on a checkpoint of every family (tiny checkpoints, tiny data), and
``dinoeval inspect`` describes each one."""

import json
import warnings

import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from tests.models import family_ckpts as fc

pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")
runner = CliRunner()

# family -> (input size, has attention)
FAMILIES = {"dino": (16, True), "dino-1ch": (16, True), "dinov2-reg": (16, True),
            "dinov2-train": (16, True), "hf-dinov2": (16, True), "dinov3": (32, True),
            "xcit": (32, False), "resnet": (32, False)}


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    out = {}
    torch.save(fc.timm_vit().state_dict(), root / "dino.pth")
    torch.save(fc.timm_vit(in_chans=1).state_dict(), root / "dino1.pth")
    v2 = fc.dinov2_hf_model(registers=2)
    torch.save(fc.dinov2_official(v2), root / "v2reg.pth")
    model = {f"teacher.backbone.{k}": v for k, v in fc.dinov2_official(v2).items()}
    model |= {f"student.backbone.{k}": v for k, v in fc.dinov2_official(v2).items()}
    torch.save({"model": model, "iteration": 10}, root / "model_final.rank_0.pth")
    fc.save_hf_export(root / "hf", fc.dinov2_hf_model(), legacy=True)
    torch.save(fc.dinov3_official(fc.dinov3_hf_model()), root / "v3.pth")
    torch.save(fc.xcit_official(fc.xcit_model()), root / "xcit.pth")
    torch.save(fc.resnet_model(bottleneck=False).state_dict(), root / "rn50.pth")
    names = ["dino.pth", "dino1.pth", "v2reg.pth", "model_final.rank_0.pth", "hf", "v3.pth",
             "xcit.pth", "rn50.pth"]
    for fam, name in zip(FAMILIES, names, strict=True):
        out[fam] = str(root / name)
    return out


def _commands(ckpt: str, size: int, tmp) -> dict[str, list[str]]:
    common = ["--ckpt", ckpt, "--img-size", str(size)]
    return {
        "knn": ["knn", *common, "--train", "digits:train[:40]", "--val", "digits:test[:20]",
                "--k", "5"],
        "extract": ["extract", *common, "--data", "digits:test[:20]", "--cache-dir", str(tmp / "f")],
        "linear": ["linear", *common, "--train", "digits:train[:40]", "--val",
                   "digits:test[:20]", "--epochs", "1", "--lr", "0.1", "--wd", "0"],
        "clusters": ["clusters", *common, "--data", "digits:test[:30]", "--seeds", "1"],
        "collapse-stats": ["collapse-stats", *common, "--data", "digits:train[:40]",
                           "--align-pairs", "4"],
        "attention": ["attention", "--ckpt", ckpt, "--data", "digits:test", "--n", "2",
                      "--resize", str(size), "--report-dir", str(tmp / "attn")],
    }


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_command_runs_on_every_family(ckpts, family, tmp_path):
    size, has_attention = FAMILIES[family]
    for name, args in _commands(ckpts[family], size, tmp_path).items():
        r = runner.invoke(app, args)
        if name == "attention" and not has_attention:
            assert r.exit_code == 2 and "has no attention maps" in r.output, r.output
            assert "Traceback" not in r.output
            continue
        assert r.exit_code == 0, f"{name} on {family}: {r.output}"


def test_inspect_describes_a_dinov2_training_checkpoint(ckpts):
    r = runner.invoke(app, ["inspect", ckpts["dinov2-train"], "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)  # stderr carries the chosen-resolution warning
    assert info["family"] == "dinov2" and info["format"] == "dinov2-train"
    assert info["networks"] == ["student", "teacher"] and info["network_read"] == "teacher"
    assert info["iteration"] == 10 and info["register_tokens"] == 2 and info["patch_size"] == 4
    assert info["native_resolution"] == [16, 16] and info["evaluation_resolution"] == [224, 224]
    assert info["parameters"] > 0 and info["head"] is None
    r = runner.invoke(app, ["inspect", ckpts["dinov3"]])
    assert r.exit_code == 0 and "storage tokens" in r.output and "dinov3" in r.output
    r = runner.invoke(app, ["inspect", "--families"])
    assert r.exit_code == 0 and all(f in r.output for f in ("dinov3", "xcit", "resnet"))


def test_broken_download_is_one_line_exit_2(tmp_path):
    p = tmp_path / "dinov2_vitb14.pth"
    p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    for args in (["inspect", str(p)], ["knn", "--ckpt", str(p), "--train", "digits:train[:40]",
                                       "--val", "digits:test[:20]", "--k", "5"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "git lfs pull" in r.output, r.output
        assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1
