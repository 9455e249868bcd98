"""Every option, fed a value of every JSON/YAML kind through every source (flags where a flag can say it,
YAML, TOML, a saved run's config.yaml): a value of the wrong kind or structure is refused with one line
naming the option and exit 2, never a traceback."""

from dataclasses import fields

import pytest
import yaml

from sknet.cli import main
from sknet.errors import ConfigError
from sknet.train.config import TrainConfig

KINDS = {"null": None, "bool": True, "int": 3, "float": 0.5, "text": "x", "list": [1, "a"], "mapping": {"a": 1}}
FIELDS = [f.name for f in fields(TrainConfig)]
# model_options is a mapping of plain values: its structure, element by element.
NESTED = {
    "a nested mapping": {"branches": {"x": 1}},
    "a mapping in a list": {"branches": [3, {"x": 1}]},
    "a number key": {1: 2},
    "NaN": {"reduction": float("nan")},
    "a list for a number": {"drop_rate": [1]},  # plain, so refused by the model's own check
    "text for a number": {"drop_rate": "0.1"},
}


def refused(name: str, value) -> bool:
    try:
        TrainConfig.from_dict({name: value})
    except ConfigError:
        return True
    return False


def _toml(value) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "true" if value is True else repr(value) if not isinstance(value, str) else f'"{value}"'


CASES = [
    (source, name, kind, value)
    for name in FIELDS
    for kind, value in KINDS.items()
    if refused(name, value)
    for source in ("yaml", "toml", "saved")
    if not (source == "toml" and value is None)  # TOML has no null
    and not (source == "saved" and name == "output")  # a resumed run's output is where its folder is
] + [(source, "model_options", kind, value) for kind, value in NESTED.items() for source in ("yaml", "saved")]


def _argv(tmp_path, source: str, name: str, value) -> list[str]:
    # Were a value accepted, a tiny run on synthetic data (model options are checked as the model is built)
    rest = {"dataset": "synthetic", "epochs": 1, "max_steps": 1, "device": "cpu", "output": str(tmp_path / "o")}
    if source == "toml":
        path = tmp_path / "c.toml"
        path.write_text(f"{name} = {_toml(value)}\n")
        return ["train", "--config", str(path)]
    if source == "yaml":
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({**rest, name: value}))
        return ["train", "--config", str(path)]
    run = tmp_path / "run"  # a run folder that died before its first checkpoint: only its config.yaml
    run.mkdir()
    saved = {**TrainConfig(**{**rest, "output": str(run)}).to_dict(), name: value}
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    return ["train", "--resume", str(run)]


@pytest.mark.parametrize(("source", "name", "kind", "value"), CASES, ids=lambda v: str(v)[:12])
def test_a_value_of_the_wrong_kind_is_one_line_exit_2(tmp_path, capsys, source, name, kind, value):
    assert main(_argv(tmp_path, source, name, value)) == 2
    err = capsys.readouterr().err
    named = [name] + ([str(key) for key in value] if isinstance(value, dict) else [])  # or the option inside
    assert err.count("\n") == 1 and "Traceback" not in err and any(n in err for n in named), err


FLAG_TEXTS = {"null": "null", "int": "3", "float": "0.5", "text": "x", "list": "[1, 2]", "mapping": "{a: 1}"}


def _flag_cases():
    import typing

    from sknet.cli.train_cmd import _field_type

    hints = typing.get_type_hints(TrainConfig)
    for name in FIELDS:
        kind = _field_type(hints[name])
        if name == "model_options" or kind is bool:  # no value flag (--set, and --x/--no-x)
            continue
        for label, text in FLAG_TEXTS.items():
            if text == "null" and type(None) in typing.get_args(hints[name]):
                continue  # allowed: see test_every_optional_option_takes_null_or_none_on_the_command_line
            try:
                value = kind(text) if isinstance(kind, type) and kind in (int, float, str) else text
            except ValueError:
                yield name, label, text
                continue
            if refused(name, value):
                yield name, label, text


@pytest.mark.parametrize(("name", "kind", "text"), list(_flag_cases()))
def test_a_flag_of_the_wrong_kind_is_one_line_exit_2(capsys, name, kind, text):
    assert main(["train", "--" + name.replace("_", "-"), text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and name.replace("_", "-") in err.replace("_", "-"), err
