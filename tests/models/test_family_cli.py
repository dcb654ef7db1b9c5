"""Every command runs on a checkpoint of every registered family (tiny checkpoints, tiny data),
and ``dinoeval inspect`` describes each one. The families come from the registry, so a new
family fails here until it has an example in :data:`tests.models.family_ckpts.EXAMPLES`."""

import json
import warnings

import pytest
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.models import load_backbone
from dinoeval.models.registry import families
from tests.models import family_ckpts as fc

pytest.importorskip("transformers")
warnings.filterwarnings("ignore", module="transformers")
runner = CliRunner()

NO_ATTENTION = {"resnet"}  # every other family gives CLS attention maps (XCiT: class attention)
CASES = [(f.name, ex) for f in families() for ex in fc.EXAMPLES.get(f.name, [(None, None, 0)])]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("families")


def _commands(ckpt: str, size: int, tmp) -> dict[str, list[str]]:
    common = ["--ckpt", ckpt, "--img-size", str(size)]
    return {
        "inspect": ["inspect", ckpt, "--json"],
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


@pytest.mark.parametrize("family,example", CASES,
                         ids=[f"{fam}:{ex[0]}" for fam, ex in CASES])
def test_every_command_runs_on_every_family(root, family, example, tmp_path):
    name, build, size = example
    assert build is not None, (f"registered family {family!r} has no tiny checkpoint in "
                               "tests/models/family_ckpts.EXAMPLES: add one")
    folder = root / name
    folder.mkdir(exist_ok=True)
    ckpt = str(build(folder))
    bb = load_backbone(ckpt)
    assert bb.family == family, f"{name} was read as {bb.family}"
    has_attention = bb.adapter.no_attention is None
    assert has_attention == (family not in NO_ATTENTION)
    for cmd, args in _commands(ckpt, size, tmp_path).items():
        r = runner.invoke(app, args)
        if cmd == "attention" and not has_attention:
            assert r.exit_code == 2 and "has no attention maps" in r.output, r.output
            assert "Traceback" not in r.output
            continue
        assert r.exit_code == 0, f"{cmd} on {name} ({family}): {r.output}"
        if cmd == "inspect":
            assert json.loads(r.stdout)["family"] == family


def test_inspect_describes_a_dinov2_training_checkpoint(tmp_path):
    ckpt = str(fc._dinov2_train(tmp_path))
    r = runner.invoke(app, ["inspect", ckpt, "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)  # stderr carries the chosen-resolution warning
    assert info["family"] == "dinov2" and info["format"] == "dinov2-train"
    assert info["networks"] == ["student", "teacher"] and info["network_read"] == "teacher"
    assert info["iteration"] == 10 and info["register_tokens"] == 2 and info["patch_size"] == 4
    assert info["native_resolution"] == [16, 16] and info["evaluation_resolution"] == [224, 224]
    assert info["parameters"] > 0 and info["head"] is None
    v3 = str(fc.EXAMPLES["dinov3"][0][1](tmp_path))
    r = runner.invoke(app, ["inspect", v3])
    assert r.exit_code == 0 and "storage tokens" in r.output and "dinov3" in r.output
    r = runner.invoke(app, ["inspect", "--families"])
    assert r.exit_code == 0 and all(f.name in r.output for f in families())


def test_broken_download_is_one_line_exit_2(tmp_path):
    p = tmp_path / "dinov2_vitb14.pth"
    p.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    for args in (["inspect", str(p)], ["knn", "--ckpt", str(p), "--train", "digits:train[:40]",
                                       "--val", "digits:test[:20]", "--k", "5"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and "git lfs pull" in r.output, r.output
        assert len([ln for ln in r.output.splitlines() if ln.startswith("error:")]) == 1
