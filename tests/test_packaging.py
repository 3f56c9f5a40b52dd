"""The distribution installs one top-level package, `cxrlab`, and lives beside PyPI's unrelated
`callbacks` and `experiments` packages."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _run(*cmd: str | Path, cwd: Path | None = None) -> str:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{cmd}: {out.stderr[-2000:]}"
    return out.stdout


def _folder(package: str) -> Path:
    """The repository folder of an installed package name, by pyproject's package-dir."""
    mapped = max((p for p in SETUPTOOLS["package-dir"] if package == p or package.startswith(p + ".")), key=len)
    rest = package[len(mapped):].strip(".").replace(".", "/")
    return ROOT / SETUPTOOLS["package-dir"][mapped] / rest


def test_every_folder_of_the_package_is_listed() -> None:
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for package, folder in SETUPTOOLS["package-dir"].items():
        for sub in [ROOT / folder, *(p for p in (ROOT / folder).rglob("*") if p.is_dir())]:
            if "__pycache__" in sub.parts or not any(f.is_file() for f in sub.iterdir()):
                continue
            found.add(".".join((package, *sub.relative_to(ROOT / folder).parts)))
    assert found == listed
    assert all(_folder(p).is_dir() for p in listed)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # From a copy: setuptools builds in the source tree (build/), and what an earlier build left
    # there (a module deleted since) would end up in the wheel.
    source = shutil.copytree(ROOT, out / "source", ignore=shutil.ignore_patterns(
        ".git", ".venv", "mlruns", "data", "build", "*.egg-info", "__pycache__", ".*_cache"))
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", out, source)
    (path,) = out.glob("cxrlab-*.whl")
    return path


def test_the_wheel_has_one_top_level_package(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"cxrlab", wheel.name.split("-py3")[0] + ".dist-info"}
    # Every module and every shipped config and template of the repository is in it.
    for package in SETUPTOOLS["packages"]:
        for file in _folder(package).iterdir():
            if file.suffix in (".py", ".yaml", ".j2"):
                assert f"{package.replace('.', '/')}/{file.name}" in names


def test_installs_beside_pypi_callbacks_and_experiments(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv with the wheel and the PyPI packages `callbacks` and `experiments`: each imports
    its own code, and the console script runs a shipped config."""
    downloads = tmp_path / "pypi"
    try:
        # experiments 2.0 declares Python >= 3.12 but imports on 3.11; only its import is checked.
        _run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", downloads, "callbacks==0.3.0")
        _run(sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--python-version", "3.12",
             "--only-binary=:all:", "-d", downloads, "experiments==2.0.0")
    except AssertionError as e:
        pytest.skip(f"the package registry is not reachable here: {str(e).splitlines()[-1]}")
    venv = tmp_path / "fresh"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", "--ignore-requires-python", wheel, *sorted(downloads.iterdir()))
    # Their dependencies (torch, pydantic, ...) come from the project's venv, read-only: a plain
    # path entry, so none of its .pth hooks (the editable cxrlab among them) runs.
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    ours = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]  # also those a .pth adds
    (site / "zz_project_venv.pth").write_text("\n".join(ours) + "\n")
    shown = _run(python, "-c", (
        "import callbacks, experiments, cxrlab, cxrlab.callbacks, cxrlab.experiments.cli.main\n"
        "print(callbacks.__file__); print(experiments.__file__); print(cxrlab.__file__)\n"
        "print(cxrlab.grad_cam.__module__, cxrlab.load_config().model.backbone)"
    ), cwd=tmp_path)
    own_callbacks, own_experiments, ours, api = shown.splitlines()
    assert own_callbacks == str(site / "callbacks" / "__init__.py")
    assert own_experiments == str(site / "experiments" / "__init__.py")
    assert ours == str(site / "cxrlab" / "__init__.py")
    assert api == "cxrlab.callbacks.explanations.gradcam resnet18"
    printed = _run(venv / "bin" / "cxrlab", "train", "--config", "ci_tiny", "--print_config", cwd=tmp_path)
    assert "backbone:" in printed
