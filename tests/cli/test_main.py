import json
import subprocess
import sys

import pytest

import sknet
from sknet.cli import main
from sknet.cli.main import build_parser


def test_profile_json(capsys):
    assert main(["profile", "sknet50", "resnext50", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in rows] == [27_479_784, 25_028_904]
    assert all(abs(r["macs_diff"]) < 0.01 for r in rows)


def test_profile_table_with_variants(capsys):
    assert main(["profile", "sknet26", "--branches", "3,5,7", "--aggregation", "sum"]) == 0
    out = capsys.readouterr().out
    assert "sknet26[branches=3,5,7; aggregation=sum]" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["profile", "sknet5"], "unknown model 'sknet5'; did you mean sknet50"),
        (["profile", "resnext50", "--branches", "3"], "has no option 'branches'"),
        (["profile", "sknet50", "--branches", ""], "branches is empty"),
        (["profile", "sknet50", "--set", "nonsense"], "--set expects KEY=VALUE"),
    ],
)
def test_user_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script_error_has_no_traceback_unless_debug():
    cmd = [sys.executable, "-m", "sknet", "profile", "nope"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    result = subprocess.run([*cmd[:3], "--debug", *cmd[3:]], capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == f"sknet {sknet.__version__}"


def test_a_warning_is_one_line_of_the_command_and_said_once(tmp_path):
    """Was: Python's format (the file, `UserWarning:`, the source line), and the checksum fallback's twice:
    the checkpoint was read twice. Read in a real process, as a user sees it."""
    from tests.train.helpers import tiny_run

    run = tmp_path / "run"
    trained = subprocess.run([sys.executable, "-m", "sknet", *tiny_run(run, "--epochs", "2")], capture_output=True)
    assert trained.returncode == 0, trained.stderr
    damaged = bytearray((run / "checkpoint.pt").read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (run / "checkpoint.pt").write_bytes(bytes(damaged))
    cmd = [sys.executable, "-m", "sknet", "train", "--resume", str(run), "--epochs", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "fails its checksum" in line]
    assert len(warned) == 1 and warned[0].startswith("sknet train: warning: "), result.stderr
    assert "UserWarning" not in result.stderr and ".py:" not in result.stderr, result.stderr
