"""Progress when output is redirected to a file: plain periodic lines, heartbeats in silent
phases, never a rich bar."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

from dinoeval.cli._logprogress import LogProgress


def test_redirected_knn_writes_plain_progress_lines(tmp_path):
    env = {**os.environ, "DINOEVAL_PROGRESS_EVERY": "0"}
    with open(tmp_path / "out.log", "w") as out, open(tmp_path / "err.log", "w") as err:
        r = subprocess.run([sys.executable, "-c", "from dinoeval.cli import main; main()", "knn",
                            "--ckpt", "pixels", "--train", "digits:train[:100]", "--val",
                            "digits:test[:30]", "--k", "5"], stdout=out, stderr=err, env=env,
                           timeout=300)
    log = (tmp_path / "err.log").read_text()
    assert r.returncode == 0, log
    lines = log.splitlines()
    assert any("digits:train[:100]: started, 100 to do" in ln for ln in lines)
    assert any("digits:train[:100]: done, 100 in" in ln for ln in lines)
    assert all(ln.startswith("[") for ln in lines if "digits:" in ln)
    assert "\r" not in log and "\x1b[" not in log  # no bar redraws, no escape codes
    assert "top1" in (tmp_path / "out.log").read_text()


def test_lines_say_done_total_rate_and_eta_and_heartbeats_fill_silences():
    buf = io.StringIO()
    with LogProgress(buf, every=0.05) as progress:
        update = progress("extract", 1000)
        time.sleep(0.06)
        update(250)
        update(1000)
        time.sleep(0.3)  # a silent phase (k-means, probes): heartbeat lines
    text = buf.getvalue()
    assert "extract: 250/1,000 (25.0%) · " in text and "ETA" in text
    assert "extract: done, 1,000 in" in text
    assert "working (after extract)" in text


def test_statistics_phases_report_progress_when_redirected(monkeypatch):
    """k-means, the logistic-regression probe and collapse statistics each write their own
    progress lines (steps done of total), not only the heartbeat."""
    from typer.testing import CliRunner

    from dinoeval.cli import app

    monkeypatch.setenv("DINOEVAL_PROGRESS_EVERY", "0")
    runner = CliRunner()
    cases = {
        ("clusters", "-c", "pixels", "--data", "digits:test[:60]", "--seeds", "2"):
            ["k-means (2 seeds + silhouette): started, 3 to do",
             "k-means (2 seeds + silhouette): done, 3 in"],
        ("linear", "-c", "pixels", "--train", "digits:train[:80]", "--val", "digits:test[:20]",
         "--mode", "logreg", "--c", "0.1", "--c", "1"):
            ["logistic regression (fits over 2 C + refit): started, 3 to do",
             "logistic regression (fits over 2 C + refit): done, 3 in"],
        ("collapse-stats", "-c", "pixels", "--data", "digits:test[:60]"):
            ["cls: collapse statistics (phases): started, 3 to do",
             "cls: collapse statistics (phases): done, 3 in",
             "cls: NC3/NC4 probe: linear heads"],
    }
    for args, wanted in cases.items():
        r = runner.invoke(app, list(args))
        assert r.exit_code == 0, r.output
        for text in wanted:
            assert text in r.stderr, (args, text, r.stderr)
        assert "\x1b[" not in r.stderr and "\r" not in r.stderr
