"""Real runs in subprocesses: resume after SIGKILL is exact; a 2-process gloo run works; the CLI."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from dinoeval.cli import app
from pretrain.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
_HANG = 900  # s; a guard against a hung subprocess, not a timing assertion (busy CI machines are slow)
TINY_ARGS = [
    "--data", "digits:train", "--arch", "vit_tiny", "--patch-size", "4", "--img-size", "8",
    "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--out-dim", "64",
    "--local-crops-number", "2", "--batch-size", "32", "--threads", "1", "--log-every", "1",
    "--set", "local_size=4", "--set", "head_hidden_dim=64", "--set", "head_bottleneck_dim=32",
    "--set", "knn_train_size=200", "--set", "knn_test_size=100", "--set", "knn_k=10",
    "--set", "warmup_epochs=1", "--set", "warmup_teacher_temp_epochs=1",
]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def _pretrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "dinoeval", "pretrain", *TINY_ARGS, *args]


def _assert_same_run(a: dict, b: dict) -> None:
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    for net in ("student", "teacher"):
        assert a[net].keys() == b[net].keys()
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k} differs"
    assert torch.equal(a["dino_loss"]["center"], b["dino_loss"]["center"])
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        assert torch.equal(sa[i]["exp_avg"], sb[i]["exp_avg"])
        assert torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"])
    assert torch.equal(a["rng"]["cpu"], b["rng"]["cpu"])


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_uninterrupted_weights(tmp_path):
    run = ["--epochs", "2", "--epoch-images", "256", "--knn-every", "0",
           "--set", "save_every_steps=1"]
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_pretrain(*run, "--run-dir", str(full)), env=_env(), check=True,
                   capture_output=True, timeout=_HANG)
    total = load_checkpoint(full)["step"]
    assert total == 16

    proc = subprocess.Popen(_pretrain(*run, "--run-dir", str(killed)), env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + _HANG
    try:
        while time.monotonic() < deadline:  # wait for a few steps, then kill at a random moment
            if (killed / "log.csv").exists() and len((killed / "log.csv").read_text().splitlines()) > 4:
                break
            time.sleep(0.01)
        time.sleep(random.Random(os.getpid()).uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    at_kill = load_checkpoint(killed)["step"]
    assert 0 < at_kill < total, f"the kill came too late (step {at_kill})"

    subprocess.run([sys.executable, "-m", "dinoeval", "pretrain", "--resume", str(killed)], env=_env(),
                   check=True, capture_output=True, timeout=_HANG)
    _assert_same_run(load_checkpoint(full), load_checkpoint(killed))
    steps = pd.read_csv(killed / "log.csv")["step"]
    assert list(steps) == list(range(1, total + 1))  # replayed steps are not logged twice


@pytest.mark.slow
def test_two_process_gloo_run_trains_and_resumes(tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", "2", "-m", "dinoeval", "pretrain"]
    res = subprocess.run([*torchrun, *TINY_ARGS, "--device", "cpu", "--epochs", "1",
                          "--epoch-images", "128", "--run-dir", str(out)],
                         env=_env(), capture_output=True, text=True, timeout=_HANG)
    assert res.returncode == 0, res.stderr[-3000:]
    ckpt = load_checkpoint(out)
    assert ckpt["world_size"] == 2 and ckpt["step"] == 4
    rng = ckpt["rng"]["cpu"]
    assert rng.shape[0] == 2 and not torch.equal(rng[0], rng[1])  # each rank's own stream
    epochs = pd.read_csv(out / "epochs.csv")
    assert epochs["knn_top1"].notna().all() and len(epochs) == 2
    assert pd.read_csv(out / "log.csv")["loss"].notna().all()


def test_cli_runs_and_reports_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli"
    args = ["pretrain", *TINY_ARGS, "--epochs", "1", "--epoch-images", "64", "--run-dir",
            str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert (out / "checkpoint.pth").exists() and (out / "backbone.safetensors").exists()
    res = runner.invoke(app, ["pretrain", "--data", "digits:train"])
    assert res.exit_code == 2 and "--run-dir" in res.output
    res = runner.invoke(app, ["pretrain", "--run-dir", str(tmp_path / "x"), "--set", "bogus=1"])
    assert res.exit_code == 2 and "bogus" in res.output
    res = runner.invoke(app, ["pretrain", "--resume", str(out), "--lr", "0.1"])
    assert res.exit_code == 2 and "lr" in res.output
    res = runner.invoke(app, ["pretrain", "--resume", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no checkpoint" in res.output
    # Fashion-MNIST's 14 px local crops with patch 4: a one-line error naming the fix, no run
    bad = tmp_path / "p4"
    res = runner.invoke(app, ["pretrain", "--recipe", "fmnist-cpu", "--patch-size", "4",
                              "--run-dir", str(bad)])
    assert res.exit_code == 2, res.output
    assert "local crop side 14 px" in res.output and "local_size=N" in res.output
    assert not (bad / "checkpoint.pth").exists()
    res = runner.invoke(app, ["pretrain", "--recipe", "fmnist-cpu", "--img-size", "30",
                              "--run-dir", str(bad)])
    assert res.exit_code == 2 and "--img-size" in res.output, res.output


def test_time_budget_stops_cleanly_with_a_checkpoint(tmp_path, tiny_config):
    from pretrain.loop import train_loop

    res = train_loop(tiny_config(epochs=50, time_budget_minutes=0.0), tmp_path / "tb")
    assert res.stop_reason == "time budget" and res.step == 1
    ckpt = load_checkpoint(tmp_path / "tb")
    assert ckpt["step"] == 1 and ckpt["step_in_epoch"] == 1
    res = train_loop(tiny_config(epochs=50, time_budget_minutes=0.0), tmp_path / "tb",
                     resume=True)
    assert res.step == 2


def test_image_folder_source_and_bf16_autocast(tmp_path, tiny_config):
    from PIL import Image

    from pretrain.loop import train_loop

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(24):  # mixed sizes: decoded, resized and center-cropped per image
            h, w = rng.integers(10, 20, size=2)
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / c / f"{i}.png")
    cfg = tiny_config(data=f"imagefolder:{tmp_path / 'imgs'}", epochs=1, epoch_images=32,
                      batch_size=16, knn_train_size=16, knn_test_size=8, knn_k=5, amp="bf16",
                      num_workers=1)
    res = train_loop(cfg, tmp_path / "run")
    assert res.step == 2 and res.knn_top1 is not None
    log = pd.read_csv(tmp_path / "run" / "log.csv")
    assert np.isfinite(log["loss"]).all()


@pytest.mark.gpu
def test_cuda_step_with_bf16_matches_the_cpu_layout(tmp_path, tiny_config):
    from pretrain.loop import train_loop

    res = train_loop(tiny_config(device="cuda", amp="bf16", epochs=1), tmp_path / "gpu")
    assert res.step == 4
    ckpt = load_checkpoint(tmp_path / "gpu")
    assert "cuda" in ckpt["rng"] and ckpt["teacher"]["backbone.cls_token"].device.type == "cpu"


@pytest.mark.parametrize("use_bn", [False, True])
def test_teacher_starts_equal_to_the_student_even_with_batchnorm_in_the_head(tiny_config, use_bn):
    # The teacher is a copy of the student without drop path, so at step 0 both give the same
    # logits. With BatchNorm in the head this only holds when the teacher normalises with the
    # batch's statistics, as the official code does (an eval-mode teacher would use its
    # never-updated running statistics and disagree).
    from pretrain.step import build_models

    cfg = tiny_config(drop_path=0.0, head_use_bn=use_bn).resolved((8, 8))
    torch.manual_seed(0)
    student, teacher = build_models(cfg)
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), student(x))
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in teacher.modules()) == use_bn
