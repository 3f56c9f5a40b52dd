"""benchmarks/gpu_suite.sh: refuses to run without CUDA, and runs end to end with --smoke on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SUITE = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_suite.sh"


def suite(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHON": sys.executable}
    return subprocess.run(["bash", str(SUITE), *args], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the suite would run for real")
def test_without_cuda_it_says_so_and_fails() -> None:
    done = suite()
    assert done.returncode == 2 and "no CUDA device visible to torch" in done.stderr and "--smoke" in done.stderr


def test_smoke_run_prints_every_ratio() -> None:
    done = suite("--smoke")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.split("== every ratio (cpu) ==")[1]
    for model in ("vgg19 frozen", "densenet201 full", "resnet101 scratch"):
        assert f"ratio {model}: cxrlab / raw PyTorch" in summary
    assert "ratio vgg19 full: cxrlab / cxrlab fp32" in summary
    assert "grad_cam " in summary and "aopc " in summary
    assert "ratio warm/no_cache" in summary or "ratio loader: skipped" in summary
