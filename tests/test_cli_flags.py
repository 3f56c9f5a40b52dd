"""One flag spelling across all commands; the hyphenated spellings of before still work, hidden."""

from __future__ import annotations

import argparse

import pytest

from cxrlab.experiments.cli.main import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*path, name))


def test_every_flag_has_one_spelling() -> None:
    shown = {
        (" ".join(path), flag)
        for path, parser in _commands(build_parser())
        for action in parser._actions if action.help != argparse.SUPPRESS
        for flag in action.option_strings if flag.startswith("--")
    }
    assert len(shown) > 100  # every config key of train/sweep/evaluate/... is a flag
    hyphenated = sorted(f"{cmd}: {flag}" for cmd, flag in shown if "-" in flag[2:])
    assert hyphenated == [], hyphenated


def test_old_spelling_is_a_hidden_alias(tmp_path, capsys) -> None:
    assert main(["data", "phantom", str(tmp_path / "p"), "--n-per-class", "2", "--size", "64", "--quiet"]) == 0
    out = capsys.readouterr()
    assert "wrote 8 images" in out.out
    assert "--n-per-class is now spelled --n_per_class" in out.err
    with pytest.raises(SystemExit):
        main(["data", "phantom", "--help"])
    text = capsys.readouterr().out
    assert "--n_per_class" in text and "--n-per-class" not in text


def test_each_old_spelling_still_reaches_its_flag() -> None:
    from cxrlab.experiments.cli.flags import OLD_SPELLINGS

    hidden = {
        flag
        for _, parser in _commands(build_parser())
        for action in parser._actions if action.help == argparse.SUPPRESS
        for flag in action.option_strings
    }
    assert set(OLD_SPELLINGS) <= hidden
    assert "--print-config" not in hidden  # never spelled so: no alias invented for it
