"""The package's layers import downward only (every import counts, lazy ones included),
no module-level import cycle exists, and the CLI starts without torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "hybnn"
# Rank of each top-level module or package of hybnn: an import must go to a lower rank
# (or stay inside its own package). Equal ranks are independent siblings.
RANKS = {
    "errors": 0, "settings": 0.2, "hybnn": 0.5,
    "artifacts": 1, "hooks": 1, "progress": 1,
    "plots": 2, "machine": 2,
    "data": 3, "binary": 3,
    "models": 4, "encoders": 4.5, "onnxgraph": 2.5,
    "pipeline": 5,
    "engine": 6, "federated": 6, "experiments": 6,
    "bundle": 6.5, "runtime": 6.7,
    "estimator": 6.9, "api": 7,
    "cli": 8, "__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module_level_only: bool = False) -> set[str]:
    """Every hybnn module ``path`` imports (absolute names)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "hybnn":
                found.add(node.module)
                found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "hybnn")
    return found


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def layer(module: str) -> str:
    while module not in MODULES and "." in module:  # a name imported from a module
        module = module.rsplit(".", 1)[0]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "hybnn"


def test_every_top_level_module_has_a_rank():
    assert {layer(m) for m in MODULES} <= set(RANKS), set(map(layer, MODULES)) - set(RANKS)


# The package root re-exports the object API (PEP 562, loaded on first use); modules below
# import only the root's eager names (``__version__``, ``HybnnError``).
ROOT_EXPORTS = {"hybnn.estimator"}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downward_only(module):
    mine = layer(module)
    bad = sorted(
        target for target in imports(MODULES[module])
        if (theirs := layer(target)) != mine and target != "hybnn"
        and RANKS[theirs] >= RANKS[mine]
        and not (module == "hybnn" and layer(target) in {m.split(".")[1] for m in ROOT_EXPORTS})
    )
    assert not bad, f"{module} (layer {mine}) imports upward or sideways: {bad}"


def test_no_module_level_import_cycle():
    # A submodule importing its own package's names is not a cycle: Python initializes
    # the package first.
    graph = {m: {t for t in imports(p, module_level_only=True)
                 if t in MODULES and t != m and not m.startswith(t + ".")}
             for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in graph[m]:
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t):], t] if t in stack else [m, t]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if t not in state:
                visit(t, [*stack, t])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["federate", "--help"],
                                  ["study", "rebnn", "--help"], ["reproduce", "--help"],
                                  ["continual", "--help"]])
def test_help_imports_no_torch_numpy_or_flower(argv):
    code = ("import sys\nfrom hybnn.cli import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'numpy', 'flwr') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv", [
    ["train", "--codes", "/nonexistent/c.safetensors", "--out", "o"],
    ["extract", "--encoder", "/nonexistent", "--out", "c.safetensors"],
    ["train", "--model", "bcnn", "--task", "3v3", "--out", "o"],
    ["extract", "--encoder", ".", "--task", "Pullover,Coatx", "--data", "fashion-mnist",
     "--out", "c.safetensors"],
    ["predict", "--model", "/nonexistent", "x.png"],
])
def test_a_wrong_path_or_task_fails_before_torch_is_imported(argv):
    code = ("import sys\nfrom hybnn.cli import main\n"
            f"rc = main({argv!r})\n"
            "print(rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "2 False"
    assert out.stderr.startswith("hybnn: error: ") and len(out.stderr.splitlines()) == 1
