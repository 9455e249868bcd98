"""Every numeric option of every command is checked where it is parsed: a value that is not finite or out of
its range is one line naming the option, exit 2, before anything is read (sknet.cli.options.checked)."""

import argparse

import pytest

from sknet.cli import main
from sknet.cli.main import build_parser


def _numeric_options():
    """(command, flag, parse function) of every option whose values are numbers, found in the parser."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    found = []
    for command, parser in sub.choices.items():
        for action in parser._actions:
            kind = getattr(action.type, "__name__", None)
            if action.option_strings and kind in ("int", "float"):
                found.append((command, action.option_strings[0], action.type))
    return found


NUMERIC = _numeric_options()


def test_the_numeric_options_are_found():
    flags = {(command, flag) for command, flag, _ in NUMERIC}
    expected = [("train", "--lr"), ("eval", "--resolution"), ("export", "--resolution"), ("attention", "--scales"),
                ("predict", "--topk"), ("shards", "--shard-size"), ("bench", "--repeats"), ("profile", "--resolution"),
                ("export", "--calibration-size"), ("export", "--opset"), ("eval", "--batch-size")]  # fmt: skip
    assert set(expected) <= flags and len(flags) > 40


@pytest.mark.parametrize(("command", "flag", "parse"), NUMERIC, ids=[f"{c} {f}" for c, f, _ in NUMERIC])
def test_every_numeric_option_is_checked_where_it_is_parsed(command, flag, parse):
    assert parse is not int and parse is not float, f"{command} {flag}: argparse's bare {parse.__name__}"
    assert getattr(parse, "check", None) is not None, f"{command} {flag} has no range check"


def _bad_values(check):
    values = ["nan", "inf", "-inf"] if check.kind is float else ["1.5", "inf"]
    if check.low is not None:
        values.append(str(check.low if check.open_low else check.low - 1))
    if check.high is not None:
        values.append(str(check.high if check.open_high else check.high + 1))
    return values


@pytest.mark.parametrize(("command", "flag", "parse"), NUMERIC, ids=[f"{c} {f}" for c, f, _ in NUMERIC])
def test_a_value_out_of_range_or_not_finite_is_one_line(capsys, command, flag, parse):
    for value in _bad_values(parse.check):
        assert main([command, flag, value]) == 2, (flag, value)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"argument {flag}" in err and "Traceback" not in err, err
