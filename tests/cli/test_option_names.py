"""One name per thing across commands: ``--out`` is the results table wherever it appears
(folders are --cache-dir / --report-dir / --run-dir, report's file --save); the old spellings
still work as hidden aliases with a one-line deprecation note."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from dinoeval.cli import app
from dinoeval.cli._common import OUT_HELP, RENAMED

runner = CliRunner()
GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]
CLI_DIR = Path(__file__).parents[2] / "dinoeval" / "cli"


def _options(name: str) -> list:
    return [p for p in GROUP.commands[name].params  # type: ignore[attr-defined]
            if getattr(p, "param_type_name", "") == "option"]


@pytest.mark.parametrize("name", COMMANDS)
def test_out_means_the_results_table_and_old_names_are_hidden_aliases(name):
    for opt in _options(name):
        names = set(opt.opts) | set(opt.secondary_opts)
        if opt.hidden:
            old = [n for n in names if n.startswith("--")]
            assert any((name, n) in RENAMED for n in old), f"{name}: hidden {names} not in RENAMED"
            continue
        if "--out" in names or "-o" in names:
            assert names == {"--out", "-o"} and opt.help == OUT_HELP, (name, names, opt.help)
    for (command, old), new in RENAMED.items():
        if command != name:
            continue
        visible = {n for o in _options(name) if not o.hidden for n in o.opts}
        assert new in visible, f"{name}: {old} renamed to {new}, which it lacks"


def test_old_spellings_work_with_a_deprecation_note(tmp_path):
    r = runner.invoke(app, ["extract", "-c", "pixels", "--data", "digits:test[:10]", "--out",
                            str(tmp_path / "feats")])
    assert r.exit_code == 0, r.output
    assert "--out is deprecated here; use --cache-dir" in r.stderr
    assert list((tmp_path / "feats").rglob("meta.json"))
    both = runner.invoke(app, ["extract", "-c", "pixels", "--data", "digits:test[:10]", "--out",
                               str(tmp_path / "a"), "--cache-dir", str(tmp_path / "b")])
    assert both.exit_code == 2 and "give only --cache-dir" in both.output
    none = runner.invoke(app, ["extract", "-c", "pixels", "--data", "digits:test[:10]"])
    assert none.exit_code == 2 and "--cache-dir" in none.output
    res = tmp_path / "res.csv"
    assert runner.invoke(app, ["knn", "-c", "pixels", "--train", "digits:train[:60]", "--val",
                               "digits:test[:10]", "--k", "3", "--out", str(res)]).exit_code == 0
    r = runner.invoke(app, ["report", str(res), "-o", str(tmp_path / "t.md")])
    assert r.exit_code == 0 and "--output is deprecated here; use --save" in r.stderr
    assert "top1" in (tmp_path / "t.md").read_text()


def test_pretrain_out_is_the_run_dir_alias():
    r = runner.invoke(app, ["pretrain", "--out", "never", "--device", "gpu"])
    assert r.exit_code == 2 and "use --run-dir" in r.stderr


def test_commands_print_user_strings_without_markup():
    """Notes, paths and specs (``digits:train[:200]``) print through ``say`` or rich Text, never
    as an f-string rich would parse as markup."""
    offenders = []
    for path in sorted(CLI_DIR.glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"console\.print\(f[\"']", line) and "escape(" not in line:
                offenders.append(f"{path.name}:{i}: {line.strip()}")
    assert not offenders, offenders
