"""The package's layers (docs/design.md, "Layers"): every import points down, and nothing is cyclic.

Read from the source with ``ast``, so an import inside a function counts as much as one at the
top of a module.  A new module must be placed in :data:`LAYER_OF`: an unknown one fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "datalad_slurm"

#: the layer of every package (a folder) and base module; higher imports lower, never up
LAYER_OF = {
    "commands": 5,
    "hookcli": 5,
    "usecases": 4,
    "commit": 3,
    "jobs": 2,
    "slurm": 1,
    "git": 1,
    "settings": 0,
    "results": 0,
    "paths": 0,
    "globs": 0,
    "spool": 0,
    "errors": 0,
    "__init__": 0,
}

#: what the bottom layers may import of ours besides themselves: ``slurm/`` and ``git/`` know
#: nothing of jobs, records or the spool; ``spool`` is stdlib-only (the hook installs it alone)
ONLY = {
    "slurm": {"errors"},
    "git": {"errors"},
    "spool": set(),
    "errors": set(),
}


def unit(module: str) -> str:
    """``datalad_slurm.jobs.registry`` -> ``jobs``; ``datalad_slurm.paths`` -> ``paths``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The modules of ours that ``path`` imports (absolute names)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "datalad_slurm"}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.level:
                raise AssertionError(f"{path}: relative import of {node.module}; write it absolute")
            if node.module.split(".")[0] == "datalad_slurm":
                found.add(node.module)
                if node.module == "datalad_slurm" or node.module.count(".") == 1:
                    # ``from datalad_slurm.jobs import registry`` names a module
                    found |= {
                        f"{node.module}.{a.name}"
                        for a in node.names
                        if (
                            PACKAGE.parent / node.module.replace(".", "/") / f"{a.name}.py"
                        ).exists()
                    }
    return found


def graph() -> dict[str, set[str]]:
    return {
        module_name(p): imports_of(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if "_hook" not in p.parts  # the wheel's copy of epilog/, made by setup.py
    }


def violations(edges: dict[str, set[str]]) -> list[str]:
    found = []
    for module, targets in sorted(edges.items()):
        source = unit(module)
        if source not in LAYER_OF:
            found.append(f"{module}: not placed in a layer (add it to LAYER_OF and docs/design.md)")
            continue
        for target in sorted(targets):
            dest = unit(target)
            if dest == source or target == "datalad_slurm":
                continue
            if dest not in LAYER_OF:
                found.append(f"{module} imports {target}, which is in no layer")
            elif source in ONLY and dest not in ONLY[source]:
                found.append(f"{module} imports {target}: {source} may import only {ONLY[source]}")
            elif LAYER_OF[dest] > LAYER_OF[source] or (
                LAYER_OF[dest] == LAYER_OF[source] and LAYER_OF[source] > 0
            ):
                found.append(
                    f"{module} (layer {LAYER_OF[source]}) imports {target} (layer {LAYER_OF[dest]})"
                )
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles between modules (each reported once, by depth-first search)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges:
                continue
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_every_import_points_down() -> None:
    assert violations(graph()) == []


def test_no_module_imports_itself_round_about() -> None:
    assert cycles(graph()) == []


@pytest.mark.parametrize(
    "edges, expected",
    [
        ({"datalad_slurm.slurm.state": {"datalad_slurm.jobs.registry"}}, "may import only"),
        ({"datalad_slurm.jobs.registry": {"datalad_slurm.commit.record"}}, "(layer 3)"),
        ({"datalad_slurm.commit.batch": {"datalad_slurm.usecases.finish"}}, "(layer 4)"),
        ({"datalad_slurm.git.pack": {"datalad_slurm.slurm.state"}}, "may import only"),
        ({"datalad_slurm.spool": {"datalad_slurm.errors"}}, "may import only"),
        ({"datalad_slurm.newthing": set()}, "not placed in a layer"),
        ({"datalad_slurm.slurm.jsoncli": {"datalad_slurm.git.runner"}}, "may import only"),
    ],
)
def test_the_check_sees_an_upward_import(edges: dict[str, set[str]], expected: str) -> None:
    assert any(expected in v for v in violations(edges)), violations(edges)


def test_the_check_sees_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}}
    assert cycles(edges) == [["a", "b", "c", "a"]]
