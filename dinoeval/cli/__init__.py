"""The ``dinoeval`` command line. Each command lives in its own module with ``register(app)``."""

from __future__ import annotations

import importlib
import sys

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
)

# One line per command module; each defines register(app).
_COMMAND_MODULES = [
    "dinoeval.cli.attention",
    "dinoeval.cli.demo",
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


def main() -> None:
    """Console-script entry point."""
    sys.exit(app())
