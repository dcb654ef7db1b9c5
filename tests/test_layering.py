"""The house's floors: no import circles, and no import that runs up the layering.

Every ``import`` statement of every module under ``dinoeval/`` and ``pretrain/`` is read with
``ast`` (top-level, function-local and ``TYPE_CHECKING`` imports alike: a function-local import
still makes a circle), resolved to the project module it names, and checked against the floors:

    errors < _io < data, checks < models, results < features < eval < pretrain
    < pipeline, monitor < report < demo, api < cli < __main__

A module may import its own package's modules and anything on a lower floor, never a module on
its own floor in another package or on a higher one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {
    "dinoeval.errors": 0,
    "dinoeval._io": 0.5,
    "dinoeval.data": 1, "dinoeval.checks": 1,
    "dinoeval.models": 2, "dinoeval.results": 2,
    "dinoeval.features": 3,
    "dinoeval.eval": 4,
    "pretrain": 5,
    "dinoeval.pipeline": 6, "dinoeval.monitor": 6,
    "dinoeval.report": 7,
    "dinoeval.demo": 8, "dinoeval.api": 8,
    "dinoeval.cli": 9,
    "dinoeval.__main__": 10,
}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in ("dinoeval", "pretrain"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The longest project module that ``name`` (``a.b.c``) starts with."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in MODULES:
            return candidate
        parts.pop()
    return None


def imports_of(module: str) -> set[str]:
    """Project modules that ``module`` imports anywhere in its body."""
    tree = ast.parse(MODULES[module].read_text())
    is_pkg = MODULES[module].name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_pkg]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` names the submodule; `from pkg import name`, the package
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base
                     for a in node.names]
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
    return found


def floor_of(module: str) -> tuple[str, int] | None:
    """``(room, floor)`` of a module: its entry in FLOORS (the longest matching prefix)."""
    best = None
    for room, floor in FLOORS.items():
        if (module == room or module.startswith(room + ".")) and (
                best is None or len(room) > len(best[0])):
            best = (room, floor)
    return best


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_project_module_has_a_floor() -> None:
    unplaced = [m for m in MODULES if m not in ("dinoeval",) and floor_of(m) is None]
    assert not unplaced, f"give these modules a floor in FLOORS: {unplaced}"


def upward_imports(module: str, graph: dict[str, set[str]]) -> list[str]:
    """What ``module`` imports from its own floor in another room, or from a higher floor."""
    room, floor = floor_of(module)
    bad = []
    for target in sorted(graph[module]):
        if target == "dinoeval":
            continue  # the lazy package facade names everything on purpose
        t_room, t_floor = floor_of(target)
        if t_room != room and t_floor >= floor:
            bad.append(f"{target} (floor {t_floor})")
    return bad


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w == "dinoeval" or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return circles


@pytest.mark.parametrize("module", sorted(m for m in MODULES if floor_of(m) is not None))
def test_no_import_runs_up_or_sideways(module: str) -> None:
    bad = upward_imports(module, GRAPH)
    room, floor = floor_of(module)
    assert not bad, f"{module} (floor {floor}, {room}) imports {', '.join(bad)}"


def test_no_import_circles() -> None:
    circles = import_circles(GRAPH)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_a_known_import() -> None:
    # guards the parser: the k-NN runner imports its core, the CLI imports the runners
    assert "dinoeval.eval.knn" in GRAPH["dinoeval.pipeline.knn"]
    assert floor_of("dinoeval.pipeline.knn") == ("dinoeval.pipeline", 6)
    # function-local imports count (a circle through one is still a circle)
    assert "dinoeval.report.results_page" in GRAPH["dinoeval.cli.report"]


def test_the_checker_fails_on_a_circle_and_an_upward_import() -> None:
    # the real graph plus the two kinds of edge this house once had: models/vit -> eval/attention
    # (upward) and models/backbone <-> models/timm_models (a circle through a local import)
    graph = {m: set(t) for m, t in GRAPH.items()}
    graph["dinoeval.models.vit"].add("dinoeval.eval.attention")
    graph["dinoeval.models.vit"].add("dinoeval.models.backbone")
    assert upward_imports("dinoeval.models.vit", graph) == ["dinoeval.eval.attention (floor 4)"]
    assert ["dinoeval.models.backbone", "dinoeval.models.vit"] in import_circles(graph)
