"""The layout's rules, read from the code: imports point one way, no importlib dispatch, and one
module makes every MLflow write."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("experiments", "callbacks", "datamodules", "lightning_modules")

# Bottom to top; a module may import its own layer and the layers below it, never above.
LAYERS = (
    ("experiments.config",),
    ("datamodules", "lightning_modules"),  # side by side: neither imports the other
    ("callbacks.explanations",),
    ("callbacks",),
    ("experiments.tracking",),
    ("experiments.evaluation",),
    ("experiments.training",),
    ("experiments.sweeps",),
    ("experiments.cli",),
)
MLFLOW_WRITES = {
    "log_batch", "log_metric", "log_param", "log_params", "log_metrics", "set_tag", "set_tags",
    "log_artifact", "log_artifacts", "log_figure", "log_text", "log_dict", "log_table",
    "log_inputs", "log_input", "create_run", "set_terminated", "start_run", "end_run",
}
WRITER = "experiments.tracking.writer"
# What an MLflow write is called on: an MlflowClient (`client`, `ctx.client`, Lightning's
# `logger.experiment`) or the fluent `mlflow` module. Writers handed to callbacks are not.
MLFLOW_RECEIVER = re.compile(r"client|\.experiment$|^mlflow(\.|$)")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(), str(path))
    return out


def _part(module: str) -> tuple[int, str] | None:
    """(layer index, the part of the layer) of a project module; the longest prefix wins."""
    best = None
    for rank, parts in enumerate(LAYERS):
        for part in parts:
            if (module == part or module.startswith(part + ".")) and (best is None or len(part) > len(best[1])):
                best = (rank, part)
    return best


def _imports(tree: ast.Module) -> list[str]:
    names = []
    for node in ast.walk(tree):  # function-level imports count too
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def _receiver(node: ast.expr) -> str:
    """The source of what a method is called on; for `Maker(args).method()`, just `Maker`."""
    return ast.unparse(node.func if isinstance(node, ast.Call) else node)


def test_every_module_has_a_layer() -> None:
    orphans = [m for m in _modules() if m.count(".") and _part(m) is None and m != "experiments"]
    assert orphans == [], f"modules outside every layer: {orphans}"


def test_imports_point_down() -> None:
    upward = []
    for module, tree in _modules().items():
        here = _part(module)
        if here is None:
            continue
        for target in _imports(tree):
            there = _part(target)
            if there is None or there[1] == here[1]:
                continue
            if there[0] >= here[0]:
                upward.append(f"{module} imports {target}")
    assert sorted(set(upward)) == []


def test_config_imports_nothing_of_the_project() -> None:
    for module, tree in _modules().items():
        if module.startswith("experiments.config"):
            inner = [t for t in _imports(tree) if t.split(".")[0] in PACKAGES and not t.startswith("experiments.config")]
            assert inner == [], f"{module} imports {inner}"


def test_no_dynamic_imports() -> None:
    found = []
    for module, tree in _modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                found.append(module)
            if isinstance(node, ast.Name) and node.id in ("import_module", "__import__"):
                found.append(module)
    assert found == []


def test_one_module_writes_to_mlflow() -> None:
    writes = []
    for module, tree in _modules().items():
        if module == WRITER:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in MLFLOW_WRITES and MLFLOW_RECEIVER.search(_receiver(node.func.value))
            ):
                writes.append(f"{module}:{node.lineno} .{node.func.attr}(")
    assert writes == [], "MLflow writes outside experiments/tracking/writer.py"
