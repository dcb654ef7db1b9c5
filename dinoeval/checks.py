"""Checks of user-facing option values, made before any expensive work.

Each failure is a :class:`DinoevalError` whose message names the option and what it accepts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypeVar

from dinoeval.errors import DinoevalError

N = TypeVar("N", int, float)


def option(default: Any = dataclasses.MISSING, *, help: str,
           default_factory: Any = dataclasses.MISSING, **cli: Any) -> Any:
    """A config dataclass field that is also a command-line option.

    The default and the help are written here once; :mod:`dinoeval.cli._options` turns the field
    into a typer option of every command that uses the config. ``cli`` holds the rest of the
    field's metadata (``flag="--k"``, ``shown="..."``, ``cli=(type, to_field, default)``).
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, **cli})


def at_least(option: str, value: N, minimum: N) -> N:
    """``value`` when it is ``>= minimum``, else an error naming ``option``."""
    if value < minimum:
        raise DinoevalError(f"{option} must be >= {minimum}, got {value}")
    return value


def positive(option: str, value: N) -> N:
    """``value`` when it is ``> 0`` (and not NaN), else an error naming ``option``."""
    if not value > 0:
        raise DinoevalError(f"{option} must be > 0, got {value}")
    return value


def one_of(option: str, value: str, choices: Iterable[str]) -> str:
    """``value`` when it is one of ``choices``, else an error listing them."""
    choices = tuple(choices)
    if value not in choices:
        listed = " or ".join(choices) if len(choices) <= 2 else (
            f"one of {', '.join(choices)}")
        raise DinoevalError(f"{option} must be {listed}, got {value!r}")
    return value


def check_device(spec: str) -> str:
    """``spec`` when torch can use it here (``cpu``, ``cuda``, ``cuda:N``, ``mps``), else an error
    saying which device exists. Returns the spec unchanged, so configs stay plain strings."""
    import torch

    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise DinoevalError(f"--device {spec!r} is not a torch device; use cpu, cuda or "
                            "cuda:N") from err
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DinoevalError(f"--device {spec}: no CUDA GPU is visible here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise DinoevalError(f"--device {spec}: only {count} CUDA GPU(s) are visible "
                                f"(cuda:0..cuda:{count - 1})")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise DinoevalError(f"--device {spec}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise DinoevalError(f"--device {spec}: dinoeval runs on cpu, cuda or mps")
    return spec


def check_output_path(path: Path, option: str = "--out") -> Path:
    """An output file path whose folder can exist: no parent is a file and ``path`` is not a
    folder. Checked before the work so that a typo does not cost a whole run."""
    if path.is_dir():
        raise DinoevalError(f"{option} {path} is a folder; give a file name inside it")
    _check_ancestors(path.parent, path, option)
    return path


def _check_ancestors(folder: Path, path: Path, option: str) -> None:
    """The first existing one of ``folder`` and its parents must be a writable folder."""
    for p in (folder, *folder.parents):
        if p.exists():
            if not p.is_dir():
                raise DinoevalError(f"{option} {path}: {p} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK) or not _can_create_in(p):
                raise DinoevalError(f"{option} {path}: {p} is not writable; choose another "
                                    "place")
            return


def _can_create_in(folder: Path) -> bool:
    """Whether a file can really be created in ``folder`` (``os.access`` says yes to root on a
    read-only mount or ``/proc``): a hidden probe file is created and removed."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".dinoeval-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def check_output_dir(path: Path, option: str = "--out") -> Path:
    """An output folder that exists or can be created (neither it nor a parent is a file)."""
    _check_ancestors(path, path, option)
    return path


ImgSize = int | tuple[int, int]
"""A model input size: ``N`` (square) or ``(H, W)``."""

IMG_SIZE_FORMS = "N or HxW (height x width), e.g. 224 or 224x320"


def parse_img_size(value: Any, option: str = "--img-size", *,
             square_only: str | None = None) -> ImgSize | None:
    """``value`` (``None``, ``224``, ``"224"``, ``"224x320"`` or ``(224, 320)``) as an input size:
    ``N`` for a square one (``"224x224"`` too), ``(H, W)`` otherwise; ``None`` stays ``None``.

    ``square_only``: why the command needs a square side; a non-square size is then refused
    with that reason.

    Raises:
        DinoevalError: another form, a side that is not a positive integer, or a non-square size
            where ``square_only`` is given.
    """
    if value is None:
        return None
    sides: tuple[Any, ...]
    if isinstance(value, str):
        text = value.strip().lower().replace("×", "x")
        parts = [p.strip() for p in text.split("x")] if "x" in text else [text]
        if len(parts) not in (1, 2) or not all(p.lstrip("-").isdigit() for p in parts):
            raise DinoevalError(f"{option} must be {IMG_SIZE_FORMS}; got {value!r}")
        sides = tuple(int(p) for p in parts)
    elif isinstance(value, (tuple, list)):
        sides = tuple(value)
    else:
        sides = (value,)
    n_ok = len(sides) == 2 if isinstance(value, (tuple, list)) else len(sides) in (1, 2)
    if not n_ok or not all(isinstance(s, int) and not isinstance(s, bool) for s in sides):
        raise DinoevalError(f"{option} must be {IMG_SIZE_FORMS}; got {value!r}")
    for s in sides:
        if s <= 0:
            raise DinoevalError(f"{option} must be > 0, got {value}")
    if len(sides) == 1 or sides[0] == sides[1]:
        return int(sides[0])
    if square_only is not None:
        raise DinoevalError(f"{option} {sides[0]}x{sides[1]} is not square, and {square_only}; "
                            "pass one number")
    return (int(sides[0]), int(sides[1]))
