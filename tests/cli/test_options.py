"""Options written once: every command's options and defaults are its config fields'."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import typer
from typer.testing import CliRunner

from dinoeval.checks import at_least, option
from dinoeval.cli import app
from dinoeval.cli._options import Group, option_fields, with_options

COMMANDS = {c.name or c.callback.__name__: c.callback for c in app.registered_commands}
GENERATED = sorted(n for n, cb in COMMANDS.items() if hasattr(cb, "__dinoeval_groups__"))


def _click(name: str):
    return typer.main.get_command(app).commands[name]


def _flag(f: dataclasses.Field) -> str:
    flag = f.metadata.get("flag")
    if flag is None:
        return "--" + f.name.replace("_", "-")
    return flag if isinstance(flag, str) else flag[0]


def test_every_evaluation_command_generates_its_options() -> None:
    assert {"knn", "extract", "linear", "clusters", "collapse-stats", "attention",
            "extract-sharded", "knn-bank", "demo", "pretrain", "video-seg", "dense",
            "retrieval", "copy-detection"} <= set(GENERATED)


def test_no_command_lists_config_options_by_hand() -> None:
    # every command but the two that take no config (inspect, report) generates its options
    assert set(COMMANDS) - set(GENERATED) <= {"inspect", "report"}


@pytest.mark.parametrize("name", GENERATED)
def test_command_options_and_defaults_equal_the_config_fields(name: str) -> None:
    callback = COMMANDS[name]
    params = {p.name: p for p in _click(name).params if p.name != "help"}
    expected = set(callback.__dinoeval_own__)
    overrides = getattr(callback, "__dinoeval_overrides__", False)
    for group in callback.__dinoeval_groups__.values():
        for f in option_fields(group):
            expected.add(f.name)
            p = params[f.name]
            assert _flag(f) in p.opts, (name, f.name, p.opts)
            assert p.help.startswith(f.metadata["help"]), (name, f.name)
            if overrides:  # pretrain: a value given overrides the recipe; none means "not given"
                assert p.default is None, (name, f.name)
            elif "cli" in f.metadata:
                assert p.default == group.defaults.get(f.name, f.metadata["cli"][2])
            elif typing.get_origin(typing.get_type_hints(group.cls)[f.name]) is tuple:
                assert p.default is None and p.multiple  # not given: the field default
                assert "default:" in p.help
            else:
                want = group.defaults.get(f.name, f.default)
                assert p.default == want, (name, f.name, p.default, want)
    assert set(params) == expected, (name, set(params) ^ expected)


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Toy:
    ks: tuple[int, ...] = option((1, 2), help="Ks.", flag="--k")
    size: int = option(3, help="A size.")
    runs: tuple[int, ...] = option((0, 1), help="Runs.", cli=(int, lambda n: tuple(range(n)), 2))
    hidden: float = 0.5

    def __post_init__(self) -> None:
        at_least("--size", self.size, 1)


def _toy_app(seen: list) -> typer.Typer:
    toy = typer.Typer()

    @toy.command()
    @with_options(cfg=Group(_Toy, defaults={"size": 4}))
    def run(name: str = "x", *, cfg: _Toy) -> None:
        seen.append((name, cfg))

    return toy


def test_generated_options_build_the_config_and_convert_values() -> None:
    seen: list = []
    r = CliRunner().invoke(_toy_app(seen), ["--k", "5", "--k", "7", "--runs", "3"])
    assert r.exit_code == 0, r.output
    assert seen[-1] == ("x", _Toy(ks=(5, 7), size=4, runs=(0, 1, 2)))
    r = CliRunner().invoke(_toy_app(seen), ["--name", "y"])
    assert seen[-1] == ("y", _Toy(ks=(1, 2), size=4, runs=(0, 1)))  # the per-command default
    assert "--hidden" not in CliRunner().invoke(_toy_app(seen), ["--help"]).output


def test_a_config_check_is_one_error_line_before_the_command_runs() -> None:
    seen: list = []
    r = CliRunner().invoke(_toy_app(seen), ["--size", "0"])
    assert r.exit_code == 2 and not seen
    assert "--size must be >= 1, got 0" in r.output
