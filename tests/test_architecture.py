"""The layout's rules, read from the code: each layer is a folder, imports point down the layers the
README's Architecture tree lists (top to bottom), no cycle, no importlib dispatch, one module makes
every MLflow write, and each choice is registered once."""

from __future__ import annotations

import ast
import re
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

from cxrlab.config import HEADS, METHODS, OPTIMIZERS, SCHEDULERS, SOURCES, Registry

ROOT = Path(__file__).resolve().parents[1]
# Where each part of the installed package lives in the repository (pyproject's package-dir).
FOLDERS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
MLFLOW_WRITES = {
    "log_batch", "log_metric", "log_param", "log_params", "log_metrics", "set_tag", "set_tags",
    "log_artifact", "log_artifacts", "log_figure", "log_text", "log_dict", "log_table",
    "log_inputs", "log_input", "create_run", "set_terminated", "start_run", "end_run",
}
WRITER = "cxrlab.experiments.tracking.writer"
# What an MLflow write is called on: an MlflowClient (`client`, `self.client`, Lightning's
# `logger.experiment`) or the fluent `mlflow` module. Writers handed to callbacks are not.
MLFLOW_RECEIVER = re.compile(r"client|\.experiment$|^mlflow(\.|$)")
REGISTRIES: tuple[Registry, ...] = (METHODS, HEADS, OPTIMIZERS, SCHEDULERS, SOURCES)


def _modules() -> dict[str, ast.Module]:
    """Every module of the package by its installed name, parsed."""
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _layers() -> list[tuple[str, ...]]:
    """The layers top to bottom, as the README's Architecture tree lists their folders; a line
    `a/ | b/` holds two parts side by side, which may not import each other."""
    readme = (ROOT / "README.md").read_text()
    tree = re.search(r"## Architecture\n.*?```text\n(.*?)```", readme, re.S)
    assert tree, "README.md: the Architecture section needs its ```text tree of folders"
    to_package = {folder.rstrip("/") + "/": package for package, folder in FOLDERS.items()}
    layers = []
    for line in tree.group(1).splitlines():
        folders = [f.strip() for f in re.split(r"\s{2,}", line.strip(), maxsplit=1)[0].split("|")]
        parts = []
        for folder in folders:
            top = next((f for f in to_package if folder.startswith(f)), None)
            assert top, f"README tree: {folder} is not a folder of the package (pyproject's package-dir)"
            dotted = to_package[top] + ("." + folder[len(top):].strip("/").replace("/", ".") if folder != top else "")
            if dotted in MODULES:  # folders of data only (configs/, templates/) hold no layer
                parts.append(dotted)
        if parts:
            layers.append(tuple(parts))
    return layers


LAYERS = _layers()


def _part(module: str) -> tuple[int, str] | None:
    """(position from the top, the part) of a module: the longest part that contains it."""
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
    return [n for n in names if n == "cxrlab" or n.startswith("cxrlab.")]


def _receiver(node: ast.expr) -> str:
    """The source of what a method is called on; for `Maker(args).method()`, just `Maker`."""
    return ast.unparse(node.func if isinstance(node, ast.Call) else node)


def test_the_tree_lists_every_layer_once() -> None:
    parts = [p for layer in LAYERS for p in layer]
    assert len(parts) == len(set(parts))
    assert LAYERS[0] == ("cxrlab",) and LAYERS[-1] == ("cxrlab.config",)  # the API on top, the config at the bottom
    for top in ("cxrlab.experiments", "cxrlab.callbacks", "cxrlab.datamodules", "cxrlab.lightning_modules"):
        assert any(p == top or p.startswith(top + ".") for p in parts), f"{top} is missing from the README tree"


def test_every_module_has_a_layer() -> None:
    orphans = [m for m in MODULES if _part(m) is None and m != "cxrlab.experiments"]
    assert orphans == [], f"modules outside every layer of the README tree: {orphans}"


def test_imports_point_down() -> None:
    upward = []
    for module, tree in MODULES.items():
        here = _part(module)
        if here is None or here[1] == "cxrlab":  # the API face imports its names from every layer
            continue
        for target in _imports(tree):
            there = _part(target)
            if there is None or there[1] == here[1] or target in (here[1], "cxrlab"):
                continue
            if there[0] <= here[0]:
                upward.append(f"{module} imports {target}")
    assert sorted(set(upward)) == []


def test_the_top_level_folders_are_the_layers() -> None:
    """Data, models and callbacks never import the experiments; the config imports nothing of cxrlab."""
    for module, tree in MODULES.items():
        top = module.split(".")[1] if "." in module else ""
        targets = _imports(tree)
        if top in ("datamodules", "lightning_modules", "callbacks"):
            assert not [t for t in targets if t.startswith("cxrlab.experiments")], module
        if top == "config":
            assert all(t.startswith("cxrlab.config") for t in targets), module


def _imported_modules(tree: ast.Module) -> set[str]:
    """The modules an import statement runs: `from p import sub` runs p.sub, `from p import name` p."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {node.module}
    return {m for m in found if m in MODULES}


def test_no_import_cycle() -> None:
    graph = {module: _imported_modules(tree) - {module, "cxrlab"} for module, tree in MODULES.items() if module != "cxrlab"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path[path.index(module):], module))}"
        if module in done:
            return
        for target in graph.get(module, ()):
            visit(target, (*path, module))
        done.add(module)

    for module in list(graph):
        visit(module, ())


def test_no_dynamic_imports() -> None:
    found = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr == "import_module":
                found.append(module)
            if isinstance(node, ast.Name) and node.id in ("import_module", "__import__"):
                found.append(module)
    assert found == []


def test_one_module_writes_to_mlflow() -> None:
    writes = []
    for module, tree in MODULES.items():
        if module == WRITER:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in MLFLOW_WRITES and MLFLOW_RECEIVER.search(_receiver(node.func.value))
            ):
                writes.append(f"{module}:{node.lineno} .{node.func.attr}(")
    assert writes == [], "MLflow writes outside experiments/tracking/writer.py"


def _registrations() -> dict[str, list[str]]:
    """name -> the modules whose decorators register it (`@X.register("n")`, `@heatmap_method("n")`,
    `@register("n", ...)`)."""
    found: dict[str, list[str]] = defaultdict(list)
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and deco.args and isinstance(deco.args[0], ast.Constant):
                        name = ast.unparse(deco.func)
                        if name.endswith("register") or name == "heatmap_method":
                            found[deco.args[0].value].append(module)
    return found


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.key)
def test_each_choice_is_registered_once(registry: Registry) -> None:
    """Every value of a registry comes from exactly one decorator, and no other table lists them."""
    registrations = _registrations()
    for name in registry:
        assert len(registrations[name]) == 1, f"{registry.key}={name!r} is registered in {registrations[name]}"
    names = set(registry)
    tables = []
    for module, tree in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if len(keys & names) >= 2:
                    tables.append(f"{module}:{node.lineno}")
    assert tables == [], f"a second table of {registry.key} values"
