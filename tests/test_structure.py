"""The package's shape: imports flow one way (no cycles, no upward imports), and package __init__ files
hold no logic. Read from the source with ``ast`` (function-level imports included), so nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import ftsweep

SRC = Path(ftsweep.__file__).resolve().parent.parent
PACKAGES = ("ftsweep", "hydra_plugins")

# Lower layers must not import these (cli -> tools / sweeper / report -> recipe -> data / model -> config, ...).
UPPER = {
    "tools and cli": ("ftsweep.cli", "ftsweep.inspect", "ftsweep.generate", "ftsweep.merge", "ftsweep.publish",
                      "ftsweep.init", "ftsweep.lr_find"),
    "sweeper and report": ("ftsweep.sweeper", "ftsweep.report", "hydra_plugins.ftsweep_sweeper.ftsweep_sweeper"),
    "recipe": ("ftsweep.train", "ftsweep.callbacks"),
    "data and model": ("ftsweep.data", "ftsweep.model", "ftsweep.tiny", "ftsweep.memory"),
}
LAYERS = {  # module prefix -> the groups it must not import
    "ftsweep.train": ("tools and cli", "sweeper and report"),
    "ftsweep.callbacks": ("tools and cli", "sweeper and report"),
    "ftsweep.stages": ("tools and cli", "sweeper and report", "recipe"),
    "ftsweep.data": ("tools and cli", "sweeper and report", "recipe"),
    "ftsweep.objectives": ("tools and cli", "sweeper and report", "recipe"),
    "ftsweep.model": ("tools and cli", "sweeper and report", "recipe"),
    "ftsweep.memory": ("tools and cli", "sweeper and report", "recipe"),
    "ftsweep.config": ("tools and cli", "sweeper and report", "recipe", "data and model"),
    "ftsweep.rundir": ("tools and cli", "sweeper and report", "recipe", "data and model"),
    "ftsweep.tracking": ("tools and cli", "sweeper and report", "recipe", "data and model"),
    "ftsweep.paths": ("tools and cli", "sweeper and report", "recipe", "data and model"),
    "ftsweep.sweepdir": ("tools and cli", "sweeper and report", "recipe", "data and model"),
    "ftsweep.errors": ("tools and cli", "sweeper and report", "recipe", "data and model"),
}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (SRC / pkg).rglob("*.py"):
            parts = path.relative_to(SRC).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports (anywhere in the file)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                           for a in node.names]
            for t in targets:
                while t and t not in mods:  # `import ftsweep.data.encode` -> the module, `a.b.func` -> a.b
                    t = t.rpartition(".")[0]
                if t and t != name:
                    graph[name].add(t)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (cycle := visit(m)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 30  # the scan sees the package
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_find_cycle_catches_a_loop():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_lower_layers_never_import_upper_ones():
    graph = import_graph()
    bad = []
    for module, imports in graph.items():
        for prefix, forbidden_groups in LAYERS.items():
            if module == prefix or module.startswith(prefix + "."):
                for group in forbidden_groups:
                    bad += [f"{module} imports {t} ({group})" for t in imports
                            if any(t == u or t.startswith(u + ".") for u in UPPER[group])]
    assert not bad, bad


# Sideways ties inside a layer: module prefix -> modules it must not import. The sweep calls the report
# through one hook (sweeper.sweep.execute(plan, on_end)); the report and the tools read a sweep through
# the sweeper's public study API (sweeper.study.load_study), never through each other. The config composes
# over Hydra's search path; the search-path plugin registers itself (hydra_plugins.ftsweep_sweeper).
SIDEWAYS = {
    "ftsweep.config": ("hydra_plugins",),
    "ftsweep.sweeper": ("ftsweep.report", "ftsweep.merge", "ftsweep.generate", "ftsweep.inspect", "ftsweep.publish"),
    "ftsweep.merge": ("ftsweep.report",),
    "ftsweep.generate": ("ftsweep.report",),
    "ftsweep.report": ("ftsweep.sweeper.runner", "ftsweep.sweeper.process", "ftsweep.sweeper.sweep",
                       "ftsweep.sweeper.trial", "ftsweep.sweeper.worker"),
}


def test_no_sideways_imports():
    graph = import_graph()
    bad = [f"{module} imports {t}" for module, imports in graph.items() for prefix, forbidden in SIDEWAYS.items()
           if module == prefix or module.startswith(prefix + ".")
           for t in imports if any(t == f or t.startswith(f + ".") for f in forbidden)]
    assert not bad, bad


def test_package_init_files_hold_no_logic():
    for name, path in modules().items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            docstring = isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            allowed = (ast.Import, ast.ImportFrom)
            is_all = isinstance(node, ast.Assign) and [getattr(t, "id", "") for t in node.targets] in (["__all__"], ["__version__"])
            assert docstring or isinstance(node, allowed) or is_all, f"{name}: {ast.dump(node)[:80]}"
