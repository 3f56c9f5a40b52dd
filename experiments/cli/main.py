"""The `cxrlab` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from cxrlab.callbacks import console
from cxrlab.config import ConfigError, first_line
from cxrlab.config.errors import ECHO_LIMIT
from cxrlab.experiments.cli import (
    compare,
    data,
    evaluate,
    explain,
    models,
    predict,
    register,
    sweep,
    train,
    ui,
)
from cxrlab.experiments.cli.flags import keep_old_spellings

DESCRIPTION = """\
cxrlab: train, sweep, explain and evaluate chest X-ray classifiers, tracked in MLflow.

Start with:  cxrlab data phantom data/phantom  &&  cxrlab train --config experiments/configs/phantom_demo.yaml
Runs are stored in mlruns/ (sqlite:///mlruns/mlflow.db); browse them with `cxrlab ui`.
"""

# Libraries whose errors reach a command as their own types: reported in one line.
LIBRARIES = ("mlflow", "sqlalchemy", "optuna", "requests", "urllib3", "psycopg2", "psycopg", "sqlite3", "alembic")

# Each command module registers its parser and sets its `func`; its heavy imports wait for the call.
COMMANDS = (train, data, models, ui, evaluate, predict, compare, register, explain, sweep)


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The full `cxrlab` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cxrlab", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("cxrlab")
    except PackageNotFoundError:
        ver = "dev"
    parser.add_argument("--version", action="version", version=f"cxrlab {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for command in COMMANDS:
        command.add_parser(sub)
    _finish(parser)
    return parser


def _finish(parser: argparse.ArgumentParser) -> None:
    """On every (sub)command: no abbreviations (a typo like --model.back must fail, not silently
    match --model.backbone), and the hyphenated spellings of before as hidden aliases."""
    parser.allow_abbrev = False
    keep_old_spellings(parser)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _finish(child)


def _unknown_flag(parser: argparse.ArgumentParser, argv: list[str], unknown: list[str]) -> None:
    """Exit with one line naming the first unknown argument and the closest valid flag."""
    import difflib

    command = parser
    for token in argv:  # descend into the (sub)command the user named
        sub = next((a for a in command._actions if isinstance(a, argparse._SubParsersAction)), None)
        if sub is None or token not in sub.choices:
            continue
        command = sub.choices[token]
    bad = unknown[0].split("=", 1)[0]
    flags = [o for a in command._actions if a.help != argparse.SUPPRESS for o in a.option_strings if o.startswith("--")]
    close = difflib.get_close_matches(bad, flags, n=1, cutoff=0.7)
    hint = f"; did you mean {close[0]}?" if close else f"; see {command.prog} --help"
    command.exit(2, f"{command.prog}: error: unrecognized argument {bad}{hint}\n")


def _one_line(e: BaseException) -> str:
    """The user-facing message; errors re-raised from DataLoader workers carry a traceback."""
    msg = str(e)
    if "Original Traceback" in msg:
        msg = msg.strip().splitlines()[-1].split(": ", 1)[-1]
    return msg


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cxrlab` console script."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    ns, unknown = parser.parse_known_args(argv)
    if unknown:
        _unknown_flag(parser, argv, unknown)
    func: Callable[[argparse.Namespace], int] | None = getattr(ns, "func", None)
    if func is None:
        parser.print_help()
        return 2
    console.configure(console.VERBOSE if getattr(ns, "verbose", False) else console.QUIET if getattr(ns, "quiet", False) else console.NORMAL)
    try:
        return func(ns)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        if os.environ.get("CXRLAB_DEBUG"):
            raise
        print(f"cxrlab: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left (`| head`): nothing more to say
        sys.stderr.close()
        return 0
    except Exception as e:
        # A store, a server or a database failing under a library: one line, not its traceback.
        if os.environ.get("CXRLAB_DEBUG") or type(e).__module__.split(".")[0] not in LIBRARIES:
            raise
        print(f"cxrlab: error: {type(e).__name__}: {first_line(e, ECHO_LIMIT * 2)} (CXRLAB_DEBUG=1 shows where)",
              file=sys.stderr)
        return 1


def run() -> None:
    """The `cxrlab` console script: main(), then exit without the interpreter's teardown.

    Every result is written, committed and flushed by the time main() returns; what is left is
    the teardown of torch's and CUDA's C++ libraries, which takes seconds on a small machine
    after every command. Loader workers die with this process (their parent-death signal).
    """
    code = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
