"""``dinoeval attention`` end to end: the report page, the result rows, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinoeval.data import ArraySource
from tests.conftest import attention_vit as _vit


@pytest.fixture
def tiny_ckpt(tmp_path):
    model, _ = _vit()
    path = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), path)
    return path


def test_cli_attention_writes_report_and_results(tmp_path, tiny_ckpt, monkeypatch):
    from PIL import Image
    from typer.testing import CliRunner

    from dinoeval.cli import app
    from dinoeval.results import read_results

    files = []
    for i, (h, w) in enumerate([(24, 40), (30, 18)]):
        p = tmp_path / f"f{i}.png"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(p)
        files.append(str(p))
    out = tmp_path / "rep"
    r = CliRunner().invoke(app, ["attention", "--ckpt", str(tiny_ckpt), "--num-heads", "4",
                                 "--images", *files, "--resize", "0", "--report-dir", str(out)])
    assert r.exit_code == 0, r.output
    assert (out / "index.html").exists() and (out / "figures" / "image_001.png").exists()
    assert "not scored" in r.output

    data = ArraySource(np.pad(np.full((3, 12, 12), 200, np.uint8), ((0, 0), (2, 2), (2, 2))),
                       np.zeros(3, np.int64), spec="fashion-mnist:test", name="fashion-mnist",
                       split="test", classes=("x",))
    from dinoeval.data import registry

    monkeypatch.setitem(registry._REGISTRY, "tiny-fm", (lambda a, d: data, "test only"))
    res = tmp_path / "res.csv"
    r = CliRunner().invoke(app, ["attention", "-c", str(tiny_ckpt), "--num-heads", "4",
                                 "--data", "tiny-fm", "--n", "2", "--report-dir", str(out),
                                 "--out", str(res), "--no-png"])
    assert r.exit_code == 0, r.output
    df = read_results(res)
    assert set(df["param"]) >= {"head=best", "head=mean", "head=3"}
    assert (df["n"] == 2).all()
    import json

    (run,) = json.loads((tmp_path / "res.csv.config.json").read_text())["runs"]
    assert run["data"] == "fashion-mnist:test" and run["n"] == 2
    assert run["attention"]["mass"] == 0.6 and run["backbone"]["num_heads"] == 4


@pytest.mark.parametrize("args, message", [
    (["--report-dir", "x"], "exactly one of --data"),
    (["--report-dir", "x", "--data", "digits", "--fit", "stretch"], "--fit must be crop or pad"),
    (["--report-dir", "x", "--data", "digits", "--mass", "1.5"], "--mass must be in"),
    (["--report-dir", "x", "--data", "digits", "--block", "9"], "--block 9 out of range"),
    (["--report-dir", "x", "--images", "missing.png"], "missing.png not found"),
    (["--report-dir", "x", "stray.png"], "image files go after --images"),
])
def test_cli_attention_bad_input_exits_2(args, message, tiny_ckpt):
    from typer.testing import CliRunner

    from dinoeval.cli import app

    r = CliRunner().invoke(app, ["attention", "--ckpt", str(tiny_ckpt), "--num-heads", "4",
                                 *args])
    assert r.exit_code == 2, r.output
    assert message in " ".join(r.output.split())
