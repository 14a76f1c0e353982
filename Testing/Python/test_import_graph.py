"""The shape of the code: no import cycles in ``semisam``, no upward imports between the Slicer-side
packages, the core free of Slicer/Qt/VTK, every module importable on its own in any order, and no product
function longer than ~80 lines without a comment saying why.

The import graph is read from the source (``ast``): every ``import`` counts, also inside functions (a
lazy import still runs), except those under ``if TYPE_CHECKING:``; ``from package import module`` counts
as importing that module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "scripted_modules"
SLICER_SIDE = {
    "SemiSAMLib": REPO / "SemiSAMLib",
    "SemiSAMSegmentLib": REPO / "SemiSAMSegment" / "SemiSAMSegmentLib",
    "SemiSAMTrainLib": REPO / "SemiSAMTrain" / "SemiSAMTrainLib",
}
#: A function longer than this needs a comment ``# Long: <why>`` in its body.
MAX_FUNCTION_LINES = 80


def _modules(root: Path, package: str) -> dict[str, Path]:
    out = {}
    for p in sorted((root / package).rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Modules of ``known`` that module ``name`` (file ``path``) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for sub in ast.walk(node))
    is_package = path.name == "__init__.py"
    deps: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            subs = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in known]
            deps.update(subs)
            if len(subs) < len(node.names):  # names that are not submodules come from the module itself
                deps.add(module)
    return {d for d in deps if d in known and d != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_no_module_of_semisam_imports_one_that_imports_it_back():
    graph = _graph(_modules(CORE, "semisam"))
    cycles = _cycles(graph)
    detail = [
        " <-> ".join(c) + ": " + "; ".join(f"{a} imports {sorted(graph[a] & set(c))}" for a in c)
        for c in cycles
    ]
    assert cycles == [], "\n".join(detail)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_core_never_imports_slicer_qt_or_vtk():
    mods = _modules(CORE, "semisam")
    bad = {}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for n in names:
                if n.split(".")[0] in (
                    "slicer",
                    "qt",
                    "ctk",
                    "vtk",
                    "SemiSAMLib",
                    "SemiSAMSegmentLib",
                    "SemiSAMTrainLib",
                ):
                    bad.setdefault(name, []).append(n)
    assert bad == {}


def test_the_shared_slicer_library_never_imports_its_clients():
    lib = _modules(REPO, "SemiSAMLib")
    bad = {}
    for name, path in lib.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "SemiSAMSegmentLib",
                "SemiSAMTrainLib",
                "SemiSAMSegment",
                "SemiSAMTrain",
            ):
                bad.setdefault(name, []).append(node.module)
            if isinstance(node, ast.Import):
                bad.update(
                    {name: [a.name]} for a in node.names if a.name.split(".")[0].startswith("SemiSAMSegment")
                )
    assert bad == {}


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_every_module_imports_in_any_order(order):
    names = sorted(_modules(CORE, "semisam"))
    if order == "reversed":
        names.reverse()
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    if name.endswith('__main__'):\n"
        "        continue\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=CORE)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-3000:]


def _long_functions() -> list[str]:
    out = []
    roots = [(CORE, "semisam"), (REPO, "SemiSAMLib"), (REPO / "SemiSAMSegment", "SemiSAMSegmentLib")]
    roots += [(REPO / "SemiSAMTrain", "SemiSAMTrainLib")]
    files = [p for root, pkg in roots for p in _modules(root, pkg).values()]
    files += [REPO / "SemiSAMSegment" / "SemiSAMSegment.py", REPO / "SemiSAMTrain" / "SemiSAMTrain.py"]
    for path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                body = lines[node.lineno - 1 : node.end_lineno]
                if n > MAX_FUNCTION_LINES and not any(line.strip().startswith("# Long:") for line in body):
                    out.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_product_function_is_long_without_saying_why():
    assert _long_functions() == []
