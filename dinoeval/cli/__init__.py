"""The ``dinoeval`` command line. Each command lives in its own module with ``register(app)``."""

from __future__ import annotations

import functools
import importlib
import inspect
import re
import sys
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="dinoeval",
    help="Evaluate, pretrain and diagnose DINO-style self-supervised vision backbones.\n\n"
    "Backbone specs (--ckpt): a checkpoint file, timm:NAME, random:ARCH (e.g. "
    "random:vit_small_patch16_224) or pixels. Data specs: fashion-mnist:train|test, digits, "
    "imagefolder:PATH, shapes:... ; add [:N] for a fixed subset of N images.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Click's plain help: descriptions wrap under long option names at any width; rich's boxed
    # table cut option names and left ~17 columns for descriptions at COLUMNS=80.
    rich_markup_mode=None,
)

# One line per command module; each defines register(app).
_COMMAND_MODULES = [
    "dinoeval.cli.attention",
    "dinoeval.cli.demo",
    "dinoeval.cli.inspect_ckpt",
    "dinoeval.cli.knn",
    "dinoeval.cli.pretrain",
    "dinoeval.cli.report",
    "dinoeval.cli.retrieval",
    "dinoeval.cli.scale",
    "dinoeval.cli.stats",
    "dinoeval.cli.video",
]

for _name in _COMMAND_MODULES:
    importlib.import_module(_name).register(app)

_HELP_WIDTH = 76  # an example line longer than this breaks before an option, with " \\"


def _example_lines(line: str) -> list[str]:
    """A long example command broken before ``--options`` into shell continuation lines."""
    indent = line[:len(line) - len(line.lstrip())]
    words = re.split(r" (?=--?[a-zA-Z])", line.strip())
    out, cur = [], indent + words[0]
    for w in words[1:]:
        if len(cur) + 1 + len(w) + 2 > _HELP_WIDTH:
            out.append(cur + " \\")
            cur = indent + "    " + w
        else:
            cur += " " + w
    return [*out, cur]


def tidy_help(doc: str) -> str:
    """A command docstring for click: example paragraphs (indented lines or lines starting with
    ``dinoeval``) are kept verbatim (click's ``\\b``) and long ones broken before options."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    out = []
    for para in paragraphs:
        lines = para.splitlines()
        if lines and all(ln.startswith(("  ", "dinoeval ", "torchrun ", "python ")) for ln in lines):
            commands: list[str] = []
            for ln in lines:  # a line starting with an option continues the command above
                if commands and ln.lstrip().startswith("-"):
                    commands[-1] += " " + ln.strip()
                else:
                    commands.append(ln.rstrip())
            out.append("\b\n" + "\n".join(x for c in commands for x in _example_lines(c)))
        else:
            out.append(para)
    return "\n\n".join(out)


def _first_sentence(doc: str) -> str:
    first = inspect.cleandoc(doc).split("\n\n")[0].replace("\n", " ")
    m = re.match(r"(.+?[.:;?])(\s|$)", first)
    return (m.group(1) if m else first).rstrip(".:;")


# Commands that print no table (they write files and say where): no --json.
NO_TABLE_COMMANDS = frozenset({"extract", "extract-sharded", "pretrain"})

JsonOpt = Annotated[bool, typer.Option(
    "--json", help="Print the table as one JSON array of rows on stdout (nothing else goes to "
    "stdout; notes and progress stay on stderr).")]


def option_names(fn: Any) -> set[str]:
    """The option names (``--x``, ``-x``) a command function declares."""
    import typing

    names: set[str] = set()
    for p in inspect.signature(fn, eval_str=True).parameters.values():
        for meta in typing.get_args(p.annotation)[1:]:
            first = getattr(meta, "default", None)  # typer: Option("--x", ...) in Annotated
            if isinstance(first, str) and first.startswith("-"):
                names.add(first)
            names.update(getattr(meta, "param_decls", None) or ())
    return names


def with_json(fn: Any) -> Any:
    """``fn`` with a ``--json`` option: its tables go to stdout as one JSON document
    (:func:`dinoeval.cli._common.json_output`)."""
    from dinoeval.cli._common import json_output

    sig = inspect.signature(fn, eval_str=True)
    param = inspect.Parameter("json_", inspect.Parameter.KEYWORD_ONLY, default=False,
                              annotation=JsonOpt)
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values()]

    @functools.wraps(fn)
    def command(*, json_: bool = False, **kw: Any) -> Any:
        with json_output(json_):
            return fn(**kw)

    command.__signature__ = sig.replace(parameters=[*params, param])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in [*params, param]}
    del command.__wrapped__  # typer must read the new signature
    if hasattr(command, "__dinoeval_own__"):  # generated options (cli/_options.py): json_ is own
        command.__dinoeval_own__ = [*command.__dinoeval_own__, "json_"]
    return command


for _info in app.registered_commands:
    if _info.name not in NO_TABLE_COMMANDS and "--json" not in option_names(_info.callback):
        _info.callback = with_json(_info.callback)
    _doc = _info.help or (_info.callback.__doc__ if _info.callback else None)
    if _doc:
        _info.help = tidy_help(_doc)
        _info.short_help = _info.short_help or _first_sentence(_doc)


def _version(value: bool) -> None:
    if value:
        from dinoeval import __version__

        print(f"dinoeval {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Evaluate, pretrain and diagnose DINO-style self-supervised vision backbones."""


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
