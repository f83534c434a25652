"""The layout is the architecture: these tests keep its dependency rules from drifting.

Layers, lowest first: foundations (config, errors, redaction, results, taxonomy) -> io -> llm -> ensemble -> pipeline
(with local),
then the pipeline's clients (auditing, distill, evaluation, service) and, on top, the cli."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "llmlabel"

# What each subpackage may import from llmlabel (besides itself and the foundations).
ALLOWED = {
    "io": set(),
    "llm": {"io"},
    "ensemble": {"llm", "io"},
    "local": {"io"},
    "pipeline": {"io", "llm", "ensemble", "local"},
    "distributed": {"io", "llm", "ensemble", "pipeline", "local"},
    # local: the embedded model as a featurizer; ensemble and evaluation: the multi-label thresholds and the
    # set and per-level scores, one implementation shared with `llmlabel label` and `llmlabel eval`
    "distill": {"io", "local", "ensemble", "evaluation"},
    "evaluation": {"io", "ensemble"},
    "auditing": {"io", "llm", "ensemble", "pipeline", "distill", "evaluation"},
    "review": {"io", "llm", "ensemble", "pipeline", "auditing", "evaluation"},
    "service": {"io", "llm", "ensemble", "pipeline", "auditing", "distill", "evaluation", "local", "review"},
}
FOUNDATIONS = {"config", "errors", "redaction", "results", "taxonomy", ""}  # "": the package itself (`__version__`)


def _modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def _imports(path: Path, modules: dict[str, Path], runtime: bool = False) -> set[str]:
    """llmlabel modules that `path` imports, at module level or inside functions (`runtime`: leaving out those
    under `if TYPE_CHECKING:`, annotations only, never loaded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if runtime:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
                node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "llmlabel":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "llmlabel")
    return {m for m in found if m in modules}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_dependencies_point_one_way() -> None:
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        pkg = _part(name)
        if pkg not in ALLOWED:
            continue
        for dep in _imports(path, modules):
            target = _part(dep)
            if target not in ALLOWED[pkg] | FOUNDATIONS | {pkg}:
                wrong.append(f"{name} imports {dep}")
    assert not wrong, wrong


def test_nothing_imports_the_cli() -> None:
    modules = _modules()
    users = [
        name
        for name, path in modules.items()
        if _part(name) != "cli" and name != "llmlabel.__main__"
        for dep in _imports(path, modules)
        if _part(dep) == "cli"
    ]
    assert not users, users


def test_no_import_cycles_between_packages() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph.setdefault(_part(name), set()).update(
            _part(d) for d in _imports(path, modules) if _part(d) != _part(name)
        )
    graph.pop("", None)  # llmlabel/__init__.py: the lazy public API re-exports from the packages

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = sorted(p for p in graph if p in reach(p))
    assert not cycles, cycles


# Process-wide state a library must not change under its caller (a notebook, a web app): only the CLI may.
_PROCESS_WIDE = {
    ("gc", "set_threshold"),
    ("gc", "disable"),
    ("gc", "freeze"),
    ("os", "_exit"),
    ("sys", "exit"),
    ("os", "putenv"),
    ("environ", "setdefault"),
    ("environ", "update"),
    ("environ", "__setitem__"),
}
# The one scoped exception: Ray's log settings, set for a Ray job that llmlabel starts and restored after it.
_SCOPED = {"llmlabel.distributed.driver"}


def test_library_changes_no_process_wide_state() -> None:
    found = []
    for name, path in _modules().items():
        if _part(name) == "cli" or name == "llmlabel.__main__" or name in _SCOPED:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            target = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                base = node.func.value
                owner = base.attr if isinstance(base, ast.Attribute) else getattr(base, "id", "")
                target = (owner, node.func.attr)
            elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and isinstance(t.value, ast.Attribute) and t.value.attr == "environ"
                for t in node.targets
            ):
                target = ("environ", "__setitem__")
            if target in _PROCESS_WIDE:
                found.append(f"{name}:{node.lineno} {'.'.join(target)}")
    assert not found, found


@pytest.mark.slow
def test_no_module_import_cycle() -> None:
    """Modules, not just packages: a cycle, even through an import inside a function, means two modules that
    cannot be read (or loaded) one without the other."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = _imports(path, modules, runtime=True) - {name}
        if path.name == "__init__.py":  # a package re-exporting its own modules is not a cycle of meaning
            deps = {d for d in deps if not d.startswith(name + ".")}
        graph[name] = deps
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
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
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_no_module_is_named_like_a_standard_library_module():
    """`llmlabel/secrets.py` once shadowed the standard library's `secrets` for anything run from its folder."""
    clash = sorted(str(p) for p in PKG.rglob("*.py") if p.stem in sys.stdlib_module_names)
    assert not clash, clash
