import pytest

from sknet.cli.main import build_parser
from sknet.cli.train_cmd import config_from_args
from sknet.errors import ConfigError
from sknet.train.config import Precision, Schedule, TrainConfig


def test_yaml_and_toml_files_and_flag_overrides(tmp_path):
    (tmp_path / "a.yaml").write_text(
        "model: sknet_tiny\nepochs: 3\nschedule: step\nmodel_options: {branches: '3,5,7'}\n"
    )
    (tmp_path / "a.toml").write_text('model = "resnext_tiny"\nlr = 0.05\nprecision = "bf16"\n')
    cfg = TrainConfig.load(tmp_path / "a.yaml")
    assert cfg.epochs == 3 and cfg.schedule is Schedule.STEP and cfg.model_options == {"branches": "3,5,7"}
    assert TrainConfig.load(tmp_path / "a.toml").precision is Precision.BF16

    args = build_parser().parse_args(
        [
            "train",
            "--config",
            str(tmp_path / "a.yaml"),
            "--epochs",
            "5",
            "--no-nesterov",
            "--aggregation",
            "sum",
        ]
    )
    cfg = config_from_args(args)
    assert cfg.epochs == 5 and cfg.nesterov is False and cfg.schedule is Schedule.STEP
    assert cfg.model_options == {"branches": "3,5,7", "aggregation": "sum"}


def test_resolved_config_round_trips(tmp_path):
    cfg = TrainConfig(epochs=4, precision="bf16", model_options={"branches": "3,5"})
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer in [1, 1000000], got 0"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of 'sgd', 'adamw'"),
        ({"lr": -1}, "lr must be a finite number in (0, 100], got -1"),
        ({"label_smoothing": 1.0}, "label_smoothing must be a finite number in [0, 1), got 1.0"),
        ({"bad_images": "ignore"}, "bad_images must be one of 'skip', 'raise'"),
        ({"grad_clip": -1}, "grad_clip must be a finite number > 0 (or null), got -1"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"output": 5}, "output must be text, got 5"),
        ({"lr": "0.1"}, "lr must be a finite number in (0, 100], got '0.1'"),
        ({"epocs": 3}, "unknown key(s) epocs"),
    ],
)
def test_bad_config_values(values, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(values)
    assert message in str(info.value)


def test_unparsable_or_missing_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        TrainConfig.load(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "none.yaml")


def test_a_key_given_twice_in_yaml_is_refused_naming_it(tmp_path):
    """YAML keys are unique (as TOML's, which its parser enforces): a second `lr:` is a mistake to name, not a
    value to take silently. A merge (<<) overridden by an explicit key is YAML's own idiom and stays."""
    (tmp_path / "twice.yaml").write_text("epochs: 1\nlr: 0.1\nepochs: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'epochs' \(line 3, column 1\)"):
        TrainConfig.load(tmp_path / "twice.yaml")
    (tmp_path / "nested.yaml").write_text("model_options: {drop_rate: 0.1, drop_rate: 0.2}\n")
    with pytest.raises(ConfigError, match="duplicate key 'drop_rate'"):
        TrainConfig.load(tmp_path / "nested.yaml")
    (tmp_path / "merge.yaml").write_text("base: &b {epochs: 1}\nrun:\n  <<: *b\n  epochs: 3\n")
    from sknet.train.config_file import read_config_file

    assert read_config_file(tmp_path / "merge.yaml")["run"] == {"epochs": 3}


def test_config_module_works_without_tomllib():
    """Python 3.10 has no tomllib: the config module falls back to tomli (a dependency there). Checked in a
    fresh interpreter where `import tomllib` fails, with a stand-in tomli."""
    import subprocess
    import sys

    script = (
        "import sys, types\n"
        "sys.modules['tomllib'] = None\n"
        "tomli = types.ModuleType('tomli')\n"
        "tomli.loads = lambda text: {'epochs': 7}\n"
        "tomli.TOMLDecodeError = ValueError\n"
        "sys.modules['tomli'] = tomli\n"
        "import sknet.train.config_file as config\n"
        "assert config.tomllib is tomli\n"
        "print('fallback ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0 and "fallback ok" in result.stdout, result.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------
# A table-driven sweep over every field: wrong types and out-of-range values, through a YAML file, a TOML
# file and the command line, each refused in one line that names the field. A new field without a Check
# fails the first test.
from dataclasses import fields  # noqa: E402

from sknet.train.config import CHECKS, Check  # noqa: E402


def test_every_field_has_a_check():
    assert {f.name for f in fields(TrainConfig)} == set(CHECKS)


def bad_values(check: Check) -> list:
    """Values `check` must refuse: other types, and just outside each bound."""
    wrong_type = {int: ["x", 1.5, True], float: ["x", True, float("nan")], bool: ["yes", 1], str: [5, 1.5], dict: [3]}
    values = list(wrong_type.get(check.kind, ["no-such-choice", 3]))
    if check.choices or check.valid:
        values.append("no-such-choice")
    step = 1 if check.kind is int else 1e-3
    if check.low is not None:
        values.append(check.low if check.open_low else check.low - step)
    if check.high is not None:
        values.append(check.high if check.open_high else check.high + step)
    return values


SWEEP = [(name, value) for name, check in CHECKS.items() for value in bad_values(check)]


@pytest.mark.parametrize(("name", "value"), SWEEP, ids=[f"{n}={v!r}" for n, v in SWEEP])
def test_a_bad_value_is_refused_naming_the_field(tmp_path, name, value):
    with pytest.raises(ConfigError, match=rf"^{name} must be "):
        TrainConfig.from_dict({name: value})
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text(__import__("yaml").safe_dump({name: value}))
    with pytest.raises(ConfigError, match=rf"^{name} must be "):
        TrainConfig.load(yaml_file)


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--epochs", "0"], "epochs"),
        (["--grad-clip", "-1"], "grad_clip"),
        (["--workers", "-1"], "workers"),
        (["--lr", "nan"], "lr"),
        (["--momentum", "1"], "momentum"),
        (["--image-size", "0"], "image_size"),
        (["--threads", "0"], "threads"),
        (["--max-steps", "0"], "max_steps"),
        (["--seed", "-3"], "seed"),
        (["--label-smoothing", "1"], "label_smoothing"),
        (["--bad-images", "ignore"], "bad_images"),
    ],
)
def test_bad_flags_exit_2_with_one_line_naming_the_field(capsys, argv, field):
    from sknet.cli import main

    code = main(["train", "--dataset", "synthetic", "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert field in err or field.replace("_", "-") in err, err


def test_yaml_numbers_in_exponent_form_are_numbers(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: 1e-4\nweight_decay: 5e-4\nwarmup_epochs: 1E0\n")
    cfg = TrainConfig.load(tmp_path / "c.yaml")
    assert (cfg.lr, cfg.weight_decay, cfg.warmup_epochs) == (1e-4, 5e-4, 1.0)


def test_toml_values_get_the_same_checks(tmp_path):
    (tmp_path / "c.toml").write_text("seed = 1.5\n")
    with pytest.raises(ConfigError, match=r"^seed must be an integer"):
        TrainConfig.load(tmp_path / "c.toml")


def test_every_optional_option_takes_null_or_none_on_the_command_line():
    """`--help` says "(or null)" for each optional option: the flag accepts null and none (any case)."""
    import typing
    from dataclasses import fields

    from sknet.cli.main import build_parser
    from sknet.cli.train_cmd import config_from_args

    hints = typing.get_type_hints(TrainConfig)
    optional = [f.name for f in fields(TrainConfig) if type(None) in typing.get_args(hints[f.name])]
    assert {"max_steps", "crop_padding", "grad_clip", "threads", "data_dir"} <= set(optional)
    for name in optional:
        for word in ("null", "None"):
            flag = "--" + name.replace("_", "-")
            args = build_parser().parse_args(["train", "--dataset", "synthetic", "--max-steps", "7", flag, word])
            assert getattr(config_from_args(args), name) is None, (name, word)


def test_threads_default_to_the_machines_cores_divided_among_its_processes(tmp_path, capsys):
    import os

    import torch

    from sknet.train.distributed import DistInfo
    from sknet.train.setup import configure_torch

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        configure_torch(TrainConfig(output=str(tmp_path)), torch.device("cpu"), DistInfo(0, 2, 0, machine_processes=2))
        assert torch.get_num_threads() == max(1, cores // 2)
        line = capsys.readouterr().out
        assert f"threads: {max(1, cores // 2)} per process ({cores} cores ÷ 2 processes of this run" in line
        configure_torch(TrainConfig(output=str(tmp_path), threads=1), torch.device("cpu"), DistInfo(0, 2, 0))
        assert torch.get_num_threads() == 1 and capsys.readouterr().out == ""  # --threads wins, silently
    finally:
        torch.set_num_threads(before)
