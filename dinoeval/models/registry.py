"""The registry of checkpoint families (timm's ``register_model`` pattern).

A :class:`Family` declares, for one kind of checkpoint:

* ``matches(state, raw)``: whether a backbone state dict (prefixes already stripped, see
  :mod:`dinoeval.models.checkpoints`) is of this family;
* ``build(state, raw, options)``: the network, its :class:`Arch`, and the :class:`Adapter` that
  gives CLS / patch tokens / attention;
* its native resolution (read off the weights), its evaluation resolution (the input its
  official k-NN / linear protocol feeds) and its position-embedding resampling rule, in words.

Families are tried in ``order`` (most specific first); the first match builds the network.
Adding a family is one module that calls :func:`register_family` at import time, plus one line in
``_FAMILY_MODULES``.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from dinoeval.errors import DinoevalError

if TYPE_CHECKING:
    from dinoeval.models.checkpoints import RawCheckpoint


@dataclass(frozen=True)
class Arch:
    """The facts of a non-timm-ViT network that tables and the feature code need.

    ``patch_size``: pixels per token side (the output stride for a ResNet);
    ``img_size``: native input ``(H, W)`` (the position table's, or the training crop);
    ``reg_tokens``: tokens between the class token and the patch tokens (registers, storage tokens);
    ``norm_eps``, ``act``, ``rope_base``: LayerNorm epsilon, MLP activation (a ``transformers``
    ``hidden_act`` name) and RoPE base, where the family has them (``None`` otherwise).
    """

    name: str
    embed_dim: int
    depth: int
    patch_size: int
    img_size: tuple[int, int]
    num_heads: int = 0
    in_chans: int = 3
    reg_tokens: int = 0
    norm_eps: float | None = None
    act: str | None = None
    rope_base: float | None = None


class Adapter(abc.ABC):
    """How to read a family's network: normalised tokens of the last blocks, and CLS attention.

    Tokens come as ``(B, T, D)`` with the class token first, then ``num_prefix_tokens - 1``
    register/storage tokens, then the patch tokens in row-major order. A family implements
    :meth:`tokens`, and :meth:`cls_attention` unless it sets :attr:`no_attention` (checked when
    the subclass is defined).
    """

    #: ``None`` when the network has CLS->patch attention, else why not (shown to the user).
    no_attention: str | None = None
    #: the most blocks :meth:`tokens` can return (``None``: any).
    max_blocks: int | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.no_attention is None and cls.cls_attention is Adapter.cls_attention:
            raise TypeError(f"{cls.__name__}: implement cls_attention or set no_attention")

    def depth(self, model: nn.Module) -> int:
        return len(model.blocks)

    @abc.abstractmethod
    def tokens(self, model: nn.Module, x: torch.Tensor, n_last: int) -> list[torch.Tensor]:
        """The normalised ``(B, T, D)`` tokens of the last ``n_last`` blocks, oldest first."""

    def cls_attention(self, model: nn.Module, x: torch.Tensor, block: int,
                      num_prefix_tokens: int) -> torch.Tensor:
        """``(B, heads, H // p, W // p)`` CLS->patch attention of ``block``.

        Raises:
            DinoevalError: the family has none (:attr:`no_attention`).
        """
        raise DinoevalError(f"no CLS attention maps: {self.no_attention}")


@dataclass
class Built:
    """What a family's ``build`` returns."""

    model: nn.Module
    arch: Any
    adapter: Adapter
    notes: list[str] = field(default_factory=list)
    eval_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class BuildOptions:
    """User overrides passed to ``build``."""

    num_heads: int | None = None


@dataclass(frozen=True)
class Family:
    """One checkpoint family (see the module docstring)."""

    name: str
    summary: str
    matches: Callable[[Mapping[str, torch.Tensor], RawCheckpoint], bool]
    build: Callable[[dict[str, torch.Tensor], RawCheckpoint, BuildOptions], Built]
    native: str
    evaluation: str
    resampling: str
    order: int = 100


_FAMILIES: dict[str, Family] = {}
_FAMILY_MODULES = (
    "dinoeval.models.vit",
    "dinoeval.models.dinov3",
    "dinoeval.models.xcit",
    "dinoeval.models.resnet",
)


def register_family(family: Family) -> Family:
    """Add ``family`` to the registry (a module calls this at import time)."""
    _FAMILIES[family.name] = family
    return family


def families() -> list[Family]:
    """Every registered family, in detection order."""
    for mod in _FAMILY_MODULES:
        importlib.import_module(mod)
    return sorted(_FAMILIES.values(), key=lambda f: f.order)


def family_names() -> str:
    """``"dinov3, dinov2, ..."`` for help texts and error messages."""
    return ", ".join(f.name for f in families())


def get_family(name: str) -> Family:
    fams = {f.name: f for f in families()}
    if name not in fams:
        raise DinoevalError(f"unknown checkpoint family {name!r}; registered: {family_names()}")
    return fams[name]


def detect_family(state: Mapping[str, torch.Tensor], raw: RawCheckpoint,
                  source: str = "") -> Family:
    """The first family whose ``matches`` accepts ``state``; a one-line error otherwise."""
    for fam in families():
        if fam.matches(state, raw):
            return fam
    shown = ", ".join(sorted(state)[:6])
    raise DinoevalError(f"checkpoint {source}: no registered family recognises its keys ({shown}"
                        f"{' ...' if len(state) > 6 else ''}); readable families: "
                        f"{family_names()}")
