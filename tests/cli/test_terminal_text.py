"""What the terminal shows: user strings kept whole (no markup parsing), readable captions, the
demo summary at 80 columns, help texts that list what exists."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from dinoeval.cli import _common, app
from dinoeval.features import FEATURE_KINDS

runner = CliRunner()
ROOT = Path(__file__).parents[2]


@pytest.fixture
def narrow_consoles():
    """Both CLI consoles as 80-column terminals writing to strings."""
    import io

    saved = (_common.console, _common.out_console)
    err = Console(width=80, force_terminal=True, record=True, file=io.StringIO())
    out = Console(width=80, force_terminal=True, record=True, file=io.StringIO())
    _common.console, _common.out_console = err, out
    import dinoeval.cli.demo as demo_cli

    demo_cli.out_console = out
    yield err, out
    _common.console, _common.out_console = saved
    demo_cli.out_console = saved[1]


def test_progress_descriptions_and_notes_keep_brackets(narrow_consoles):
    err, _ = narrow_consoles
    with _common.progress_factory() as pf:
        update = pf("pixels on digits:train[:200]", 10)
        update(10)
    _common.say("digits:test[:5]: skipped [3] images", "dim")
    text = err.export_text()
    assert "digits:train[:200]" in text and "digits:test[:5]: skipped [3] images" in text


def test_caption_formats_seconds_and_table_cells(narrow_consoles):
    _, out = narrow_consoles
    df = pd.DataFrame({"backbone": ["pixels", "pixels"], "eval": "knn", "metric": "top1",
                       "param": ["k=5", "k=20"], "value": [0.5, 0.6],
                       "seconds": 12.345678901, "timestamp": "t"})
    _common.print_results(df, title="k-NN")
    text = out.export_text()
    assert "seconds=12.3 s" in text and "12.345678" not in text


@pytest.mark.parametrize("summary", ["demo", "demo_fmnist"])
def test_demo_summary_fits_80_columns_with_every_value(narrow_consoles, summary):
    from dinoeval.cli.demo import _print_summary

    _, out = narrow_consoles
    rows = pd.read_csv(ROOT / "results" / summary / "summary.csv")
    _print_summary(rows, title="dinoeval demo — procedural shapes")
    text = out.export_text()
    lines = text.splitlines()
    assert all(len(ln) <= 80 for ln in lines), max(map(len, lines))
    assert "…" not in text
    for name in rows["backbone"]:
        assert name in lines[2]  # the header row holds every backbone whole
    for col in rows.columns[1:]:
        assert any(ln.startswith(f"│ {col} ") for ln in lines), col
    assert f"{rows['k-NN top-1'].iloc[0]:.4f}" in text


def test_feature_help_lists_every_feature_kind():
    for command in ("knn", "linear", "clusters", "collapse-stats"):
        text = " ".join(runner.invoke(app, [command, "--help"],
                                      env={"COLUMNS": "200"}).output.split())
        for kind in FEATURE_KINDS:
            if kind != "patch":
                assert kind in text, (command, kind)


def test_pretrain_help_lists_recipes_with_descriptions_and_defaults():
    from pretrain.config import RECIPE_DESCRIPTIONS, RECIPES

    assert set(RECIPE_DESCRIPTIONS) == set(RECIPES)
    text = " ".join(runner.invoke(app, ["pretrain", "--help"],
                                  env={"COLUMNS": "200"}).output.split())
    for name, line in RECIPE_DESCRIPTIONS.items():
        assert f"--recipe {name}: {' '.join(line.split())}".replace(" ", "") in \
            text.replace(" ", "")  # click may break "fashion-mnist" at its hyphen, text[-3000:]
    assert "Prototypes K of the DINO head. (default: 65536)" in text
