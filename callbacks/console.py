"""What a person sees in the terminal: a line for each thing that matters, verdicts on lines of their
own (coloured where the terminal shows colour), and the libraries' chatter silenced unless --verbose.

Every command sets the verbosity once (`configure`); training callbacks, evaluation and sweeps print
through `say` and `verdict`, which write between progress-bar updates instead of onto a bar.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any, TextIO

from tqdm import tqdm

from cxrlab.config.errors import DetailWarning

QUIET, NORMAL, VERBOSE = 0, 1, 2
_state = {"level": NORMAL}

# Library messages that ask nothing of the user, silenced by their exact text (the libraries'
# INFO logging is silenced by level instead).
NOISE = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # torch 2.14 vs Lightning's pytree copy
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # small epochs log at their end
    r"The specified dataset source can be interpreted in multiple ways",
    r".*does not have many workers which may be a bottleneck",  # num_workers is the config's choice
    r"Checkpoint directory .* exists and is not empty",  # a resumed run writes where it wrote before
    r"Some regimes for parameter .* have less than 2 trials",  # Optuna's importances of a small study
    r"Attempting to set identical low and high ylims",  # a study plot of one trial
)
# Library log records that ask nothing of the user, dropped by their text below --verbose.
# cxrlab's pyfunc is a class of the installed package, which cloudpickle stores by reference.
NOISE_LOGS = {"mlflow.pyfunc": "Passing a Python object as `python_model`"}
ENV = "CXRLAB_VERBOSITY"
LIBRARY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic", "optuna")


def configure(level: int = NORMAL) -> None:
    """Set the verbosity of this process: QUIET (the end block only), NORMAL, VERBOSE (everything,
    warnings with their source lines)."""
    _state["level"] = level
    os.environ[ENV] = str(level)  # processes this one starts (sweep workers) print the same way
    if level >= VERBOSE:
        return
    hush_libraries()
    for message in NOISE:
        warnings.filterwarnings("ignore", message=message)
    warnings.filterwarnings("ignore", category=DetailWarning)
    warnings.showwarning = _one_line


def hush_libraries() -> None:
    """Silence the libraries' INFO logging (GPU available, database tables created, a tip), below
    --verbose. Called again once they are imported: each sets its own level when it loads."""
    if level() < VERBOSE:
        # mlflow draws a bar for every artifact copy, even a local one of a single file.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        for name in LIBRARY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
        for name, text in NOISE_LOGS.items():
            logger = logging.getLogger(name)
            if not any(isinstance(f, _Drop) for f in logger.filters):
                logger.addFilter(_Drop(text))


class _Drop(logging.Filter):
    """Drops the log records whose message starts with `text`."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.text)


def inherited() -> int:
    """The verbosity of the process that started this one (NORMAL if none was set)."""
    value = os.environ.get(ENV, "")
    return int(value) if value.isdigit() else NORMAL


def level() -> int:
    """The verbosity `configure` set."""
    return _state["level"]


def _one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
              file: TextIO | None = None, line: str | None = None) -> None:
    """A warning as one line without its source path: what it says is what the user needs."""
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    say(f"warning: {text}", NORMAL, sys.stderr)


def say(text: str, at: int = NORMAL, stream: TextIO | None = None) -> None:
    """Print a line at verbosity `at` or above, between progress-bar updates."""
    if level() >= at:
        tqdm.write(text, file=stream or sys.stdout)


def _colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


def verdict(text: str, alarm: bool, at: int = NORMAL, stream: TextIO | None = None) -> None:
    """A verdict on a line of its own: bold red for an alarm, green otherwise, where colour shows."""
    stream = stream or sys.stdout
    if _colour(stream):
        text = f"\033[1;{31 if alarm else 32}m{text}\033[0m"
    say(text, at, stream)


def table(rows: list[tuple[str, Any]], at: int = NORMAL) -> None:
    """`key  value` lines, aligned."""
    width = max((len(k) for k, _ in rows), default=0)
    for key, value in rows:
        say(f"  {key:<{width}}  {value}", at)
