"""Layering of ``src/depth2img``, read from the source with ``ast`` (imports inside functions
included): no import cycles, and no lower layer importing a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "src" / "depth2img"

# What each bottom layer may import from depth2img (itself and the layers listed).
ALLOWED = {
    "depth2img.paths": (),
    "depth2img.artifacts": ("depth2img.artifacts",),
    "depth2img.data": ("depth2img.data", "depth2img.paths", "depth2img.artifacts"),
}


# The whole stack, bottom (0) to top: a module may import its own layer and those below.
LAYER_RANK = {
    "paths": 0,
    "artifacts": 0,
    "data": 1,
    "depth_estimation": 2,
    "models": 2,
    "training": 3,
    "inference": 3,
    "callbacks": 3,
    "serving": 4,
    "evaluation": 4,
    "cli": 5,
}
# Upward imports that exist today, each with the reason it is tolerated. Remove when fixed.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The depth2img modules ``path`` imports anywhere (module level, functions, classes).
    ``from a import b`` counts as ``a.b`` when that is a module, else as ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names]
            targets = [t if t in known else base for t in targets]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "depth2img" and t != name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(path, name, known) & known for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, result, counter = {}, {}, set(), [], [], [0]
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    result.append(sorted(component))
    return result


def test_checker_finds_cycles_and_layer_violations():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    source = "def f():\n    from depth2img.models.components import load_components\n"
    tree_imports = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert tree_imports == {"depth2img.models.components"}  # function-level imports are seen


def test_no_import_cycles_in_the_package():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles (module or function level):\n" + "\n".join(
        " <-> ".join(cycle) for cycle in cycles
    )


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_bottom_layers_import_only_downward(layer):
    graph = _graph()
    allowed = ALLOWED[layer]
    bad = [
        f"{module} imports {target}"
        for module, targets in sorted(graph.items())
        if module == layer or module.startswith(layer + ".")
        for target in sorted(targets)
        if not any(target == a or target.startswith(a + ".") for a in allowed)
    ]
    assert not bad, f"{layer} may import only {allowed or 'nothing from depth2img'}:\n" + "\n".join(
        bad
    )


def test_depth_estimation_imports_no_model_code():
    """``depth_estimation`` sits beside ``models`` (models load it): it may use data and paths."""
    targets = _graph()["depth2img.depth_estimation"]
    assert all(t.startswith(("depth2img.data", "depth2img.paths")) for t in targets), targets


def test_every_layer_imports_only_its_own_or_lower_layers():
    def rank(module: str) -> int | None:
        parts = module.split(".")
        return LAYER_RANK.get(parts[1]) if len(parts) > 1 else None

    bad = [
        f"{module} imports {target}"
        for module, targets in sorted(_graph().items())
        for target in sorted(targets)
        if rank(module) is not None
        and rank(target) is not None
        and rank(target) > rank(module)
        and (module, target) not in KNOWN_UPWARD
    ]
    assert not bad, "upward imports (layers: " + " <- ".join(LAYER_RANK) + "):\n" + "\n".join(bad)
