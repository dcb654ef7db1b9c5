"""Typer options generated from the config dataclasses' fields: every default and help written once.

A config field becomes an option of every command that uses the config when its metadata has a
``help`` (see :func:`dinoeval.checks.option`); fields without one stay Python-API only. The
command receives one frozen config instance per group, built inside :func:`user_errors`, so a
``__post_init__`` check prints as one ``error:`` line (exit code 2) before any work::

    @with_options(backbone=BackboneOptions, extract=ExtractOptions, config=KnnConfig)
    def knn(ckpt: CkptOpt, train: TrainOpt, val: ValOpt, out: OutOpt = None, *,
            backbone: BackboneOptions, extract: ExtractOptions, config: KnnConfig) -> None: ...

Field metadata understood here:

* ``help``: the option's help text (required for the field to be an option);
* ``flag``: the option's name(s) when not ``--field-name`` (``"--k"``, ``("--ckpt", "-c")``);
* ``shown``: how ``--help`` states a long tuple default (``"13 from 1e-4 to 1"``);
* ``cli``: ``(type, to_field, default)`` for a field whose command-line form differs (a count
  ``--seeds 3`` for the field ``seeds=(0, 1, 2)``; ``--img-size 224x320`` for ``(224, 320)``):
  the option's type, a function turning the option's value into the field's (it may raise
  :class:`~dinoeval.errors.DinoevalError`: one ``error:`` line), and the option's default;
* ``metavar``: with ``cli``, how ``--help`` names the value (``N|HxW``).

Tuples (``tuple[int, ...]``) become repeatable options whose default is the field's (an option
not given keeps the field default).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, TypeVar

import typer

from dinoeval.cli._common import user_errors

F = TypeVar("F", bound=Callable[..., Any])
_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Group:
    """One config class of a command, with per-command differences.

    Attributes:
        cls: the config dataclass.
        defaults: per-command option defaults (``{"batch_size": 16}`` for attention).
        skip: fields the command does not offer (it passes its own values through ``fixed``).
        prefix: prepended to every option name of the group (keeps names unique).
    """

    cls: type
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    skip: Iterable[str] = ()


def option_fields(group: Group) -> list[dataclasses.Field]:
    """The fields of ``group`` that are command-line options, in declaration order."""
    skip = set(group.skip)
    return [f for f in dataclasses.fields(group.cls) if "help" in f.metadata
            and f.name not in skip]


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field {f.name} has no default; it cannot be an option")


def _is_tuple(tp: Any) -> bool:
    return typing.get_origin(tp) is tuple


def _option_type(tp: Any) -> Any:
    """The type typer parses: a repeatable list for tuples, the field's type otherwise."""
    if _is_tuple(tp):
        item = typing.get_args(tp)[0]
        return list[item] | None  # type: ignore[valid-type]
    return tp


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    flag = f.metadata.get("flag")
    if flag is None:
        return ()
    return (flag,) if isinstance(flag, str) else tuple(flag)


def option_spec(group: Group, f: dataclasses.Field) -> tuple[Any, Any, Callable[[Any], Any]]:
    """``(annotation, default, to_field)`` of the typer option for field ``f``."""
    hints = typing.get_type_hints(group.cls)
    tp = hints[f.name]
    help_text = f.metadata["help"]
    if "cli" in f.metadata:
        cli_type, to_field, default = f.metadata["cli"]
        default = group.defaults.get(f.name, default)
        opt = typer.Option(*_flags(f), help=help_text, metavar=f.metadata.get("metavar"))
        return Annotated[cli_type, opt], default, to_field
    default = group.defaults.get(f.name, _field_default(f))
    if _is_tuple(tp):
        shown = f.metadata.get("shown") or " ".join(str(v) for v in default)
        ann = Annotated[_option_type(tp), typer.Option(
            *_flags(f), help=f"{help_text} Repeat for several (default: {shown}).",
            show_default=False)]
        return ann, None, lambda v, d=default: tuple(v) if v else tuple(d)
    return Annotated[tp, typer.Option(*_flags(f), help=help_text)], default, lambda v: v


def with_options(**groups: type | Group) -> Callable[[F], F]:
    """Add every option field of each config group to a typer command (see the module doc).

    The wrapped function declares one keyword-only parameter per group, annotated with the
    config class; its other parameters stay as written and come first in ``--help``.
    """
    norm = {name: g if isinstance(g, Group) else Group(g) for name, g in groups.items()}

    def deco(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name not in norm]
        generated: list[inspect.Parameter] = []
        converters: dict[str, dict[str, Callable[[Any], Any]]] = {}
        taken = {p.name for p in own}
        for gname, group in norm.items():
            converters[gname] = {}
            for f in option_fields(group):
                if f.name in taken:
                    raise TypeError(f"{fn.__name__}: option {f.name} of {group.cls.__name__} "
                                    "clashes with another parameter")
                taken.add(f.name)
                ann, default, to_field = option_spec(group, f)
                generated.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                                   default=default, annotation=ann))
                converters[gname][f.name] = to_field

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            with user_errors():
                built = {gname: norm[gname].cls(**{name: conv(kw.pop(name))
                                                   for name, conv in convs.items()})
                         for gname, convs in converters.items()}
            return fn(**kw, **built)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__dinoeval_groups__ = norm  # type: ignore[attr-defined]
        command.__dinoeval_own__ = [p.name for p in own]  # type: ignore[attr-defined]
        del command.__wrapped__  # typer must read the generated signature, not fn's
        return typing.cast(F, command)

    return deco


def _with_default(f: dataclasses.Field) -> str:
    """A field's help plus its default (``--help`` of commands whose options default to "not
    given", so the value that applies is still shown)."""
    default = _field_default(f)
    if "default" in f.metadata["help"].lower():  # the help says it already
        return f.metadata["help"]
    if isinstance(default, tuple):
        shown = f.metadata.get("shown") or " ".join(str(v) for v in default)
    elif isinstance(default, bool):
        shown = "on" if default else "off"
    else:
        shown = "none" if default is None else str(default)
    return f"{f.metadata['help']} (default: {shown})"


def with_overrides(name: str, cls: type) -> Callable[[F], F]:
    """Add every option field of ``cls`` as an option that defaults to "not given".

    For commands whose values start from somewhere else (``pretrain --recipe`` or ``--resume``):
    the command receives ``name={field: value}`` holding only the options given on the command
    line, and builds the config itself. Tuples are repeatable options, booleans ``--x/--no-x``.
    """
    group = Group(cls)

    def deco(fn: F) -> F:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != name]
        taken = {p.name for p in own}
        hints = typing.get_type_hints(cls)
        generated, to_field = [], {}
        for f in option_fields(group):
            if f.name in taken:
                raise TypeError(f"{fn.__name__}: option {f.name} of {cls.__name__} clashes "
                                "with another parameter")
            tp = hints[f.name]
            opt_tp = _option_type(tp) if _is_tuple(tp) else (
                tp if type(None) in typing.get_args(tp) else tp | None)
            ann = Annotated[opt_tp, typer.Option(*_flags(f), help=_with_default(f),
                                                 show_default=False)]
            generated.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                               default=None, annotation=ann))
            to_field[f.name] = (lambda v: tuple(v)) if _is_tuple(tp) else (lambda v: v)

        @functools.wraps(fn)
        def command(**kw: Any) -> Any:
            given = {k: to_field[k](v) for k in to_field if (v := kw.pop(k)) is not None}
            return fn(**kw, **{name: given})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + generated
        command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        command.__dinoeval_groups__ = {name: group}  # type: ignore[attr-defined]
        command.__dinoeval_overrides__ = True  # type: ignore[attr-defined]
        command.__dinoeval_own__ = [p.name for p in own]  # type: ignore[attr-defined]
        del command.__wrapped__
        return typing.cast(F, command)

    return deco


__all__ = ["Group", "option_fields", "option_spec", "with_options", "with_overrides"]
