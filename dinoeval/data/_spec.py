"""The ``@key=value,...`` options of a data spec (``shapes:train@n=2000,size=64``)."""

from __future__ import annotations

from dinoeval.errors import DinoevalError


def parse_spec_options(name: str, text: str | None, types: dict[str, type], *,
                       example: str = "") -> dict[str, object]:
    """``{key: types[key](value)}`` of ``text`` = ``"key=value,key=value"`` (empty: ``{}``).

    Raises:
        DinoevalError: an item without ``=``, an unknown key (the keys are listed), or a value
            of the wrong type; the message starts with ``name`` and ends with ``example``.
    """
    out: dict[str, object] = {}
    hint = f" (e.g. {example})" if example else ""
    for item in filter(None, (s.strip() for s in (text or "").split(","))):
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in types:
            raise DinoevalError(f"{name}: bad option {item!r}; use key=value with keys "
                                f"{', '.join(types)}{hint}")
        try:
            out[key] = types[key](value.strip())
        except ValueError:
            raise DinoevalError(f"{name}: option {key} needs a {types[key].__name__}, "
                                f"got {value!r}") from None
    return out
