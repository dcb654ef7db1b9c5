"""``dinoeval inspect CKPT``: what a checkpoint is, before evaluating it (not named inspect.py:
the package imports the standard library's ``inspect``, which a submodule of that name would shadow)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from dinoeval.cli._common import CheckpointKeyOpt, NumHeadsOpt, console, out_console, user_errors

_ROWS = (
    ("family", "family"), ("format", "format"), ("architecture", "architecture"),
    ("parameters", "parameters"), ("patch size", "patch_size"), ("input channels", "in_chans"),
    ("native resolution", "native_resolution"), ("native", "native"),
    ("evaluation resolution", "evaluation_resolution"),
    ("position resampling", "resampling"), ("register tokens", "register_tokens"),
    ("storage tokens", "storage_tokens"), ("networks held", "networks"),
    ("network read", "network_read"), ("DINO head", "head"), ("loss center", "center"),
    ("epoch", "epoch"), ("iteration", "iteration"), ("content hash", "content_hash"),
)


def _fmt(key: str, value: Any) -> str:
    if key == "native_resolution" and value is None:
        return "any"
    if value is None or value == []:
        return "—"
    if key == "parameters":
        return f"{value:,} ({value / 1e6:.1f} M)"
    if key.endswith("resolution"):
        return f"{value[0]}×{value[1]} px"
    if key == "head":
        return (f"{value['layers']}-layer MLP → {value['bottleneck']} → "
                f"{value['prototypes']} prototypes")
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def _families_table(as_json: bool = False) -> None:
    from rich.table import Table

    from dinoeval.models.registry import families

    if as_json:
        out_console.print_json(json.dumps([
            {"family": f.name, "reads": f.summary, "evaluation": f.evaluation,
             "position resampling": f.resampling} for f in families()]))
        return
    table = Table(title="checkpoint families (detection order)")
    for col in ("family", "reads", "evaluation", "position resampling"):
        table.add_column(col, overflow="fold")
    for f in families():
        table.add_row(f.name, f.summary, f.evaluation, f.resampling)
    out_console.print(table)


def inspect(
    ckpt: Annotated[str | None, typer.Argument(help="Checkpoint file or folder.")] = None,
    checkpoint_key: CheckpointKeyOpt = "teacher",
    num_heads: NumHeadsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead.")] = False,
    list_families: Annotated[bool, typer.Option(
        "--families", help="List the checkpoint families dinoeval reads, and exit.")] = False,
) -> None:
    """Say what a checkpoint is: family, architecture, parameters, patch size, native and
    evaluation resolution, registers, networks held, head, center, epoch and ignored keys."""
    with user_errors():
        if list_families:
            _families_table(as_json)
            return
        if ckpt is None:
            from dinoeval.errors import DinoevalError

            raise DinoevalError("pass a checkpoint file or folder: dinoeval inspect CKPT "
                                "(or --families)")
        from dinoeval.checks import one_of
        from dinoeval.models.describe import describe_checkpoint

        one_of("--checkpoint-key", checkpoint_key, ("teacher", "student"))
        info = describe_checkpoint(ckpt, checkpoint_key=checkpoint_key, num_heads=num_heads)
    if as_json:
        out_console.print_json(json.dumps(info))
        return
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for label, key in _ROWS:
        table.add_row(label, escape(_fmt(key, info[key])))
    for note in info["notes"]:
        table.add_row("note", escape(note))
    out_console.print(Panel(table, title=escape(info["file"]), expand=False))
    console.print(Text(info["family_summary"], style="dim"))


def register(app: typer.Typer) -> None:
    app.command("inspect")(inspect)
