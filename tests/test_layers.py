"""The import layers of the package, pinned (as kopf's .importlinter pins its own).

    cli, local, handlers            executors and entry points
    reconcile  |  workers           the planner and the code inside pods, side by side
    status, builders, store, ...    building blocks
    api                             the models everything is made of

A module may import from its own layer's package and from layers below, never above; the planner
and the workers never import each other, and the operator (handlers) never imports the workers or
the store, whose dependencies (torch, a database) its image does not have. Imports inside
functions count too.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

SOURCE = pathlib.Path(__file__).resolve().parent.parent / "operator" / "embedops"
TOP = {"cli", "local", "handlers"}
MIDDLE = {"reconcile", "workers"}
BOTTOM = {"api"}

# (importer's top-level part, parts it must not import)
FORBIDDEN = {
    "api": TOP
    | MIDDLE
    | {
        "status",
        "builders",
        "store",
        "results",
        "settings",
        "prepared",
        "modelzoo",
        "metrics",
        "manifests",
        "report",
        "evaluation",
        "retrieval",
        "progress",
    },
    "reconcile": TOP | {"workers", "store"},
    "workers": TOP | {"reconcile", "status", "metrics"},
    "handlers": {"cli", "local", "workers", "store"},
    "local": {"cli", "handlers"},
}


def _part(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def _imports() -> list[tuple[str, str]]:
    """(importing module's file, imported embedops module) for every import in the package."""
    edges = []
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("embedops"):
                names = [node.module] if node.module != "embedops" else [f"embedops.{a.name}" for a in node.names]
                edges += [(str(path.relative_to(SOURCE)), n) for n in names]
            elif isinstance(node, ast.Import):
                edges += [(str(path.relative_to(SOURCE)), a.name) for a in node.names if a.name.startswith("embedops")]
    return edges


def _layer_of(file: str) -> str:
    return file.split("/")[0].removesuffix(".py")


def test_the_layers_hold():
    broken = [
        (file, module)
        for file, module in _imports()
        if _part(module) in FORBIDDEN.get(_layer_of(file), set()) | ({"cli"} if file != "cli.py" else set())
    ]
    assert broken == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_each_layer_has_modules(layer):
    assert any(_layer_of(file) == layer for file, _ in _imports()), f"no imports seen from {layer}: a stale contract"


def test_the_operator_imports_without_the_workers_dependencies():
    """The operator image has no torch, numpy or database driver (images/operator/Dockerfile)."""
    import subprocess
    import sys

    blocked = ("torch", "numpy", "psycopg", "pgvector", "sentence_transformers", "transformers", "datasets")
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {blocked!r}: raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import embedops.cli, embedops.handlers\n"
        "embedops.cli.build_parser()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
