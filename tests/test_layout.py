"""The package layout keeps its rules: no import cycles, no upward imports between stages, and
the pure-numpy metrics import without torch.

The stages and their ranks are those of ARCHITECTURE.md: a module may import modules of its own
stage or of a lower rank, never of a higher one or of another stage of the same rank. Imports
inside functions count (a lazy import is still a dependency); imports under
``if TYPE_CHECKING:`` do not (they exist for type hints only).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "repspace"

#: Rank of each stage (first name below ``repspace``), lowest first.
RANKS = {
    "errors": 0, "version": 0,
    "utils": 1,
    "metrics": 2, "plots": 2,
    "probes": 3, "store": 3, "models": 3,
    "capture": 4, "results": 4, "testing": 4,
    "analysis": 5, "tune": 5,
    "demo": 6,
    "cli": 7,
    "__init__": 8, "__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every repspace import of ``module`` (``names`` empty for a plain
    ``import``), anywhere but under ``if TYPE_CHECKING:``."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend((a.name, []) for a in node.names if a.name.split(".")[0] == "repspace")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            if base.split(".")[0] == "repspace":
                found.append((base, [a.name for a in node.names]))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the repspace modules it imports. ``from pkg import mod`` is an edge to
    ``pkg.mod`` only; ``from pkg import function`` an edge to ``pkg``."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        edges = set()
        for base, names in _imports(ast.parse(path.read_text()), name,
                                    path.name == "__init__.py"):
            modules = [f"{base}.{n}" for n in names if f"{base}.{n}" in files]
            if len(modules) < len(names) or not names:
                while base not in files and "." in base:
                    base = base.rsplit(".", 1)[0]
                modules.append(base)
            edges.update(m for m in modules if m in files and m != name)
        graph[name] = edges
    return graph


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_stage_has_a_rank():
    stages = {_stage(m) for m in _graph()}
    assert stages <= set(RANKS), f"add to RANKS (and ARCHITECTURE.md): {stages - set(RANKS)}"


def test_no_upward_or_sideways_import():
    bad = []
    for module, targets in _graph().items():
        for target in targets:
            if target == "repspace":  # the package __init__ itself
                bad.append(f"{module} -> repspace (import the module it needs instead)")
                continue
            a, b = _stage(module), _stage(target)
            if a != b and RANKS[b] >= RANKS[a]:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports against the layer order:\n" + "\n".join(sorted(bad))


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], nxt]))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_metrics_import_without_torch():
    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'transformers', 'peft', 'h5py'):\n"
               "            raise ImportError(f'{name} is blocked in this test')\n"
               "sys.meta_path.insert(0, Block())\n"
               "import numpy as np\n"
               "import repspace.metrics as m\n"
               "x = np.random.default_rng(0).normal(size=(20, 5))\n"
               "print(round(m.linear_cka(x, x @ np.eye(5)), 6), m.effective_rank(x) > 1)\n")
    done = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                          cwd=PACKAGE.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1.0", "True"]
