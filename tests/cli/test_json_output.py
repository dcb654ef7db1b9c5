"""``--json`` on every command that prints a table: stdout is one JSON document (the rows) and
nothing else; notes and progress go to stderr. Parametrised over the app's commands, so a new
command fails here until it is given arguments below (or named as printing no table)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import typer
from typer.testing import CliRunner

from dinoeval.cli import NO_TABLE_COMMANDS, app
from dinoeval.models import ViTArch, build_vit

runner = CliRunner()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
VIDEOS = "moving-shapes@videos=1,frames=3,height=32,width=32,objects=2"


@pytest.fixture(scope="module")
def vit_ckpt(tmp_path_factory) -> str:
    arch = ViTArch(embed_dim=32, depth=1, num_heads=2, patch_size=8, img_size=(16, 16))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_vit(arch)
    path = tmp_path_factory.mktemp("json") / "tiny.pth"
    torch.save(model.state_dict(), path)
    return str(path)


def _feature_caches(tmp: Path) -> tuple[str, str]:
    """Two pixel-feature cache entries (train, val) for knn-bank."""
    entries = []
    for data, name in (("digits:train[:60]", "tr"), ("digits:test[:12]", "va")):
        r = runner.invoke(app, ["extract", "--ckpt", "pixels", "--data", data,
                                "--cache-dir", str(tmp / name)])
        assert r.exit_code == 0, r.output
        entries.append(str(next(p.parent for p in (tmp / name).rglob("meta.json"))))
    return entries[0], entries[1]


def _fake_demo(monkeypatch) -> None:
    """The demo's CLI rendering on its real summary rows, without running the demo."""
    import dinoeval.demo as demo_mod
    from dinoeval.demo import DemoResult

    summary = pd.read_csv(Path(__file__).parents[2] / "results" / "demo" / "summary.csv")

    def fake(cfg, out, **kw):
        return DemoResult(frame=pd.DataFrame(), summary=summary, targets=[], files={},
                          notes=["a note"], seconds=1.0)

    monkeypatch.setattr(demo_mod, "run_demo", fake)


def _args(name: str, tmp: Path, ckpt: str, monkeypatch) -> list[str] | None:
    """Tiny arguments of each table-printing command (None: no table, no --json)."""
    if name in NO_TABLE_COMMANDS:
        return None
    table = tmp / "res.csv"
    if name == "knn-bank":
        tr, va = _feature_caches(tmp)
        return ["--train-feats", tr, "--val-feats", va, "--k", "3", "--max-memory", "16GB",
                "--label", "PIX"]
    if name == "report":
        r = runner.invoke(app, ["knn", "-c", "PIX=pixels", "--train", "digits:train[:60]", "--val",
                                "digits:test[:12]", "--k", "3", "--out", str(table)])
        assert r.exit_code == 0, r.output
        return [str(table)]
    if name == "demo":
        _fake_demo(monkeypatch)
        return ["--report-dir", str(tmp / "demo")]
    args = {
        "knn": ["-c", "PIX=pixels", "--train", "digits:train[:60]", "--val", "digits:test[:12]",
                "--k", "3"],
        "linear": ["-c", "PIX=pixels", "--train", "digits:train[:60]", "--val", "digits:test[:12]",
                   "--mode", "logreg", "--c", "0.1", "--c", "1"],
        "clusters": ["-c", "PIX=pixels", "--data", "digits:test[:40]"],
        "collapse-stats": ["-c", "PIX=pixels", "--data", "digits:test[:40]"],
        "attention": ["-c", f"VIT={ckpt}", "--data", "shapes:test@n=2,size=16", "--n", "2",
                      "--report-dir", str(tmp / "attn")],
        "retrieval": ["-c", "PIX=pixels", "--query", "digits:test[:20]", "--pixel-size", "8"],
        "copy-detection": ["-c", "PIX=pixels", "--data", "digits:test[:40]", "--originals", "4",
                           "--n-distractors", "8", "--n-whitening", "10", "--pixel-size", "8"],
        "video-seg": ["-c", "PIX=pixels", "--data", VIDEOS, "--pixel-patch", "8"],
        "dense": ["-c", "PIX=pixels", "--train", "shapes:train@n=4,size=16", "--test",
                  "shapes:test@n=2,size=16", "--method", "knn", "--k", "3", "--pixel-patch", "8"],
        "inspect": [ckpt],
    }
    if name not in args:
        pytest.fail(f"new command {name}: give it tiny arguments in this test (it needs --json)"
                    " or add it to NO_TABLE_COMMANDS")
    return args[name]


def test_the_no_table_commands_are_known():
    assert {"extract", "extract-sharded", "pretrain"} == set(NO_TABLE_COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_json_prints_one_document_on_stdout_and_nothing_else(name, tmp_path, vit_ckpt,
                                                               monkeypatch):
    args = _args(name, tmp_path, vit_ckpt, monkeypatch)
    if args is None:
        return
    r = runner.invoke(app, [name, *args, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert doc, r.stdout
    rows = doc if isinstance(doc, list) else [doc]
    assert all(isinstance(row, dict) and row for row in rows)
    if name not in ("inspect", "report", "demo"):  # result rows: the long table's columns
        assert {"backbone", "eval", "metric", "value"} <= set(rows[0])
    if name == "demo":
        assert [row["backbone"] for row in rows] == ["DINO", "random init", "pixels"]
    if "label" in rows[0]:  # every --ckpt took NAME=SPEC: the name is in every row
        assert {row["label"] for row in rows} <= {"PIX", "VIT"}, rows
        assert {row["backbone"] for row in rows} <= {"pixels", vit_ckpt}, rows
    if name == "report":
        assert "PIX" in r.stdout, r.stdout


def test_inspect_families_json_is_one_document():
    r = runner.invoke(app, ["inspect", "--families", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert {"dino", "dinov2"} <= {row["family"] for row in rows}
