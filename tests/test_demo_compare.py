"""The end of `make demo` at tiny scale: a clean and a shortcut run of phantom_demo, then the
Makefile's own compare line, whose table must hold both runs and the alarm column."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from cxrlab.datamodules.phantom import generate_phantom
from cxrlab.experiments.cli.main import main

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
TINY = [
    "--data.image_size", "64", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
    "--explain.probe_per_class", "2", "--explain.eigen", "false", "--data.num_workers", "0",
    "--trainer.enable_progress_bar", "false", "--tracking.log_checkpoint", "false",
]


def demo_compare_args() -> list[str]:
    """The Makefile's `cxrlab compare` line of the demo, with its variables filled in."""
    text = MAKEFILE.read_text()
    metrics = re.search(r"^DEMO_METRICS = (.+)$", text, re.M).group(1).strip()
    line = re.search(r"cxrlab compare (.+)$", text, re.M).group(1).replace("$(DEMO_METRICS)", metrics)
    return shlex.split(line)


def test_demo_compare_shows_both_runs_and_the_alarm(in_tmp_cwd: Path, capsys: pytest.CaptureFixture) -> None:
    for name, shortcut in (("clean", 0.0), ("shortcut", 0.9)):
        data = in_tmp_cwd / f"phantom-{name}"
        generate_phantom(data, n_per_class=16, size=64, seed=0, shortcut=shortcut, progress=False)
        args = ["train", "--config", "phantom_demo", "--data.root", str(data), "--tracking.run_name", name]
        assert main([*args, *TINY]) == 0
        # Like the demo: each model evaluated on the clean images.
        ckpt = max(Path("mlruns/checkpoints").glob("*/*/checkpoints/best-*.ckpt"), key=lambda p: p.stat().st_mtime)
        evaluate = ["evaluate", str(ckpt), "--data.root", str(in_tmp_cwd / "phantom-clean"), "--quiet"]
        assert main([*evaluate, "--n_boot", "20", "--out", f"eval-{name}"]) == 0
    capsys.readouterr()
    args = demo_compare_args()
    assert main(["compare", *args]) == 0
    printed = capsys.readouterr().out
    assert "alarm" in printed.splitlines()[0] and "clean" in printed and "shortcut" in printed
    out = Path(args[args.index("--out") + 1])
    table = pd.read_csv(out / "compare.csv").set_index("run_name")
    assert {"clean", "shortcut", "evaluate-clean-test", "evaluate-shortcut-test"} == set(table.index)
    assert set(table["alarm"]) <= {"yes", "no"}  # every run was explained
    assert {"val/acc", "explain/border_focus", "explain/lung_focus"} <= set(table.columns)
