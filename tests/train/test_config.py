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
        ({"epochs": 0}, "epochs must be a positive integer"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of 'sgd', 'adamw'"),
        ({"lr": -1}, "lr must be a non-negative number"),
        ({"label_smoothing": 1.0}, "label_smoothing must be < 1"),
        ({"bad_images": "ignore"}, "bad_images must be"),
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
        "import sknet.train.config as config\n"
        "assert config.tomllib is tomli\n"
        "print('fallback ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "fallback ok" in result.stdout, result.stderr[-2000:]
