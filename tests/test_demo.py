"""``dinoeval demo``: end to end on a reduced size, the summary and the target checks."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.data import get_source
from dinoeval.demo import DemoConfig, TargetCheck, check_targets, run_demo, summarize
from dinoeval.models import ViTArch, build_vit
from dinoeval.results import COLUMNS, Context, Row, read_results, to_frame

SMALL_TRAIN = "shapes:train@n=96,size=32"
SMALL_TEST = "shapes:test@n=48,size=32"


@pytest.fixture
def tiny_ckpt(tmp_path: Path, seed: int) -> Path:
    arch = ViTArch(embed_dim=64, depth=2, num_heads=2, patch_size=8, img_size=(32, 32))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(arch)
    path = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def _small(ckpt: Path, **kw: object) -> DemoConfig:
    dense = {"video": "moving-shapes@videos=1,frames=4,height=32,width=32",
             "dense_train": "shapes:train@n=8,size=32", "dense_test": "shapes:test@n=4,size=32"}
    return DemoConfig(ckpt=str(ckpt), train=SMALL_TRAIN, test=SMALL_TEST, attention_images=12,
                      report_images=2, linear_epochs=2, knn_ks=(5, 10), knn_k=10,
                      copy_originals=8, copy_distractors=16, copy_whitening=16, map_points=30,
                      **{**dense, **kw})


def test_demo_runs_end_to_end_and_writes_every_file(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = run_demo(_small(tiny_ckpt), out)
    assert result.summary["backbone"].tolist() == ["DINO", "random init", "pixels"]
    for col in ("k-NN top-1", "linear top-1", "attn Jaccard (mean of heads)"):
        assert col in result.summary
    for col in ("video J&F", "dense linear mIoU", "dense k-NN mIoU"):  # every backbone has one
        assert col in result.summary and result.summary[col].between(0, 1).all(), col
    # pixels have no attention; both ViTs do
    jac = result.summary.set_index("backbone")["attn Jaccard (mean of heads)"]
    assert math.isnan(jac["pixels"]) and 0 <= jac["DINO"] <= 1 and 0 <= jac["random init"] <= 1
    for name in ("results.csv", "summary.csv", "results.md", "config.json", "report.html",
                 "attention", "video", "retrieval", "copies"):
        assert result.files[name].exists(), name
    # retrieval and copy detection through the commands' runners: the same rows they write
    for col in ("retrieval mAP", "copy-detection mAP"):
        assert result.summary[col].between(0, 1).all(), col
    ret = result.frame[result.frame["eval"] == "retrieval"]
    assert set(ret["data"]) == {get_source(SMALL_TEST).spec} and (ret["data_n"] == 48).all()
    assert (ret[ret["metric"] == "mAP"]["n"] == 48).all()  # every test image queries the rest
    cd = result.frame[(result.frame["eval"] == "copy-detection") & (result.frame["metric"] == "mAP")]
    assert cd["n"].tolist() == [8, 8, 8] and set(cd["split"]) == {"copies"}
    assert set(cd["feature"]) == {"cls+gem@32 whitened^0.5", "pixels whitened^0.5"}
    # the results page is the report's, with the issue-18 figures of the typed results
    page = result.files["report.html"].read_text()
    for stem in ("confusion_knn_dino", "confusion_linear_pixels", "rankme_spectrum",
                 "per_class_accuracy", "map_random_init"):
        assert f'alt="{stem}' in page, stem
    hits = result.files["retrieval"].read_text()
    assert hits.count("random init") >= 4 and "irrelevant" in hits
    stored = read_results(out / "results.csv")
    assert list(stored.columns) == list(COLUMNS)
    assert set(stored["eval"]) >= {"knn", "linear-grid", "kmeans-spherical", "collapse",
                                   "neural_collapse", "attention"}
    # every row says which split it measured: neural collapse is a property of the train features
    nc = stored[stored["eval"] == "neural_collapse"]
    assert len(nc) and (nc["split"] == "train").all() and (nc["n"] == 96).all()
    on_test = stored[stored["eval"].isin(["knn", "linear-grid", "kmeans-spherical", "collapse"])]
    assert (on_test["split"] == "test").all()
    md = (out / "results.md").read_text()
    assert "k-NN top-1" in md and "Targets" in md
    assert len(result.targets) == 3


def test_demo_command_prints_the_table_and_targets(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, [
        "demo", "--ckpt", str(tiny_ckpt), "--train", SMALL_TRAIN, "--test", SMALL_TEST,
        "--attention-images", "0", "--linear-epochs", "1", "--report-dir", str(out)])
    assert res.exit_code == 0, res.output
    assert "k-NN" in res.output and "random" in res.output
    assert "vs pixels" in res.output
    # one row per metric: every column whole at 80 columns, however many evaluations ran
    assert "retrieval mAP" in res.output and "copy-detection mAP" in res.output
    assert "│ random init │" not in res.output and "random init" in res.output.splitlines()[
        next(i for i, line in enumerate(res.output.splitlines()) if "metric" in line)]
    table = [line for line in res.output.splitlines() if line[:1] in "┃│┏┡└"]
    assert len(table) > 10 and max(len(line) for line in table) <= 80
    assert (out / "results.csv").exists() and not (out / "attention").exists()


def test_demo_on_fashion_mnist_does_not_overwrite_the_shapes_results(
        tiny_ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without --out each dataset has its own folder (shapes' train/test stand in for FM here,
    # so the test needs no installed dataset).
    monkeypatch.chdir(tmp_path)
    args = ["demo", "--ckpt", str(tiny_ckpt), "--train", SMALL_TRAIN, "--test", SMALL_TEST,
            "--attention-images", "0", "--linear-epochs", "1"]
    for data in ("shapes", "fashion-mnist"):
        res = CliRunner().invoke(app, [*args, "--data", data])
        assert res.exit_code == 0, res.output
    shapes_md = (tmp_path / "results" / "demo" / "results.md").read_text()
    fm_md = (tmp_path / "results" / "demo_fmnist" / "results.md").read_text()
    assert "procedural shapes" in shapes_md and "Fashion-MNIST" in fm_md


def test_demo_command_rejects_unknown_data_with_exit_code_2(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--data", "imagenet", "--report-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert "shapes" in res.output


def test_demo_command_names_a_missing_checkpoint(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["demo", "--ckpt", str(tmp_path / "nope.pth"),
                                   "--train", SMALL_TRAIN, "--test", SMALL_TEST,
                                   "--report-dir", str(tmp_path)])
    assert res.exit_code == 2


def test_demo_pretrain_trains_a_short_schedule_then_evaluates_it(tmp_path: Path) -> None:
    out = tmp_path / "pre"
    args = ["demo", "--pretrain", "--pretrain-epochs", "1", "--pretrain-minutes", "0.1",
            "--train", SMALL_TRAIN, "--test", SMALL_TEST, "--attention-images", "4",
            "--linear-epochs", "1", "--report-dir", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "pretraining" in res.output  # progress against the budget
    ckpt = out / "pretrain" / "checkpoint.pth"
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)["config"]
    assert stored["epochs"] == 1 and stored["data"] == SMALL_TRAIN
    assert stored["patch_size"] == 4 and stored["head_use_bn"]  # the shapes-cpu recipe
    specs = set(read_results(out / "results.csv")["backbone"])
    assert str(ckpt) in specs and f"random:{ckpt}" in specs
    # a second run refuses to overwrite the first one's pretraining
    again = CliRunner().invoke(app, args)
    assert again.exit_code != 0 and "already holds a pretraining run" in again.output
    assert ckpt.exists()


@pytest.mark.parametrize(("option", "value"), [("--pretrain-epochs", "0"),
                                             ("--pretrain-minutes", "-1")])
def test_demo_pretrain_rejects_a_bad_schedule_or_budget(tmp_path: Path, option: str,
                                                        value: str) -> None:
    res = CliRunner().invoke(app, ["demo", "--pretrain", option, value, "--report-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert option in res.output
    assert not (tmp_path / "pretrain").exists()


def _rows(spec: str, knn: float, jaccard: float | None) -> pd.DataFrame:
    rows = [Row("knn", "top1", knn, "k=20", 10), Row("knn", "top1", 0.0, "k=10", 10)]
    if jaccard is not None:
        rows.append(Row("attention", "jaccard", jaccard, "head=mean", 10))
    return to_frame(rows, Context(spec, "h", "a", "shapes", "test", "cls"))


def test_summary_picks_the_headline_k_and_targets_use_it() -> None:
    frame = pd.concat([_rows("ck", 0.60, 0.50), _rows("random:ck", 0.40, 0.30),
                       _rows("pixels", 0.52, None)], ignore_index=True)
    summary = summarize(frame, {"ck": "DINO", "random:ck": "random init", "pixels": "pixels"})
    assert summary["k-NN top-1"].tolist() == [0.60, 0.40, 0.52]
    checks = {t.name: t for t in check_targets(summary)}
    over_random = checks["DINO k-NN top-1 vs random init + 0.15"]
    assert over_random.passed and over_random.threshold == pytest.approx(0.55)
    over_pixels = checks["DINO k-NN top-1 vs pixels + 0.10"]
    assert not over_pixels.passed and over_pixels.threshold == pytest.approx(0.62)
    jac = checks["DINO attention Jaccard vs random init + 0.15"]
    assert jac.passed and jac.threshold == pytest.approx(0.45)


def test_target_check_text_says_pass_or_miss() -> None:
    assert TargetCheck("x", 0.5, 0.4).text().startswith("PASS")
    assert TargetCheck("x", 0.3, 0.4).text().startswith("MISS")


def test_fashion_mnist_target_is_strictly_above_pixels() -> None:
    frame = pd.concat([_rows("ck", 0.80, None), _rows("random:ck", 0.70, None),
                       _rows("pixels", 0.80, None)], ignore_index=True)
    summary = summarize(frame, {"ck": "DINO", "random:ck": "random init", "pixels": "pixels"})
    (check,) = check_targets(summary, "fashion-mnist")
    assert check.name == "DINO k-NN top-1 above pixels" and not check.passed


@pytest.mark.slow
def test_demo_with_the_shipped_checkpoint_on_a_reduced_size(tmp_path: Path) -> None:
    from dinoeval.demo import shipped_checkpoint

    ckpt = shipped_checkpoint("shapes")
    assert ckpt.stat().st_size < 8 * 2**20  # a few MB
    result = run_demo(DemoConfig(train="shapes:train@n=300", test="shapes:test@n=120",
                                 attention_images=24, report_images=2, linear_epochs=2,
                                 knn_ks=(10, 20)), tmp_path)
    by = result.summary.set_index("backbone")
    assert by.loc["DINO", "arch"] == by.loc["random init", "arch"]  # the same architecture
    # results name the shipped file by its place in the package, not by this machine's path
    shown = "dinoeval/assets/checkpoints/" + ckpt.name
    assert set(result.frame["backbone"]) == {shown, f"random:{shown}", "pixels"}
    assert json.loads((tmp_path / "config.json").read_text())["ckpt"] == shown
    # the shipped file is a trained one (measured 0.42 vs 0.14 k-NN, 0.40 vs 0.07 Jaccard here)
    assert by.loc["DINO", "k-NN top-1"] >= by.loc["random init", "k-NN top-1"] + 0.15
    dino_jac, rand_jac = by["attn Jaccard (mean of heads)"][["DINO", "random init"]]
    assert dino_jac >= rand_jac + 0.15


@pytest.mark.fmnist
@pytest.mark.slow
def test_demo_on_fashion_mnist_scores_attention_on_foreground_pixels(tmp_path: Path,
                                                                     seed: int) -> None:
    arch = ViTArch(embed_dim=64, depth=2, num_heads=2, patch_size=4, img_size=(28, 28))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_vit(arch)
    ckpt = tmp_path / "fm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    result = run_demo(DemoConfig(data="fashion-mnist", ckpt=str(ckpt),
                                 train="fashion-mnist:train[:300]",
                                 test="fashion-mnist:test[:100]", attention_images=10,
                                 report_images=2, linear_epochs=1, knn_ks=(10, 20)), tmp_path)
    assert [t.name for t in result.targets] == ["DINO k-NN top-1 above pixels"]
    assert "attn Jaccard (mean of heads)" in result.summary
    assert "Published baselines" in (tmp_path / "results.md").read_text()


# Fields that say how a run was executed, not what it trains.
_RUN_FIELDS = {"device", "num_threads", "num_workers", "time_budget_minutes", "save_every_minutes",
               "save_every_steps", "log_every"}


@pytest.mark.parametrize("data", ["shapes", "fashion-mnist"])
def test_shipped_checkpoint_was_trained_by_its_named_recipe(data: str) -> None:
    # Reproducibility: `dinoeval pretrain --recipe NAME` (assets/checkpoints/README.md) trains
    # exactly the configuration stored in the shipped file.
    from dinoeval.demo import DATASETS, shipped_checkpoint
    from pretrain.config import recipe_config

    stored = torch.load(shipped_checkpoint(data), map_location="cpu", weights_only=True)["config"]
    ds = DATASETS[data]
    expected = recipe_config(ds.recipe).resolved((stored["img_size"],) * 2).to_dict()
    # a field added after the file was trained (absent from it) had its default then
    import dataclasses

    from pretrain.config import PretrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    stored = {**{k: defaults[k] for k in expected if k not in stored}, **stored}
    differ = {k: (stored[k], expected[k]) for k in expected
              if k not in _RUN_FIELDS and stored.get(k) != expected[k]}
    assert not differ
    assert stored["data"] == ds.train
