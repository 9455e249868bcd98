"""SIGTERM and SIGINT at any moment of a command: while it starts (importing torch), while it prepares a
run (before the training loop), never a traceback or a silent 143: 130 with one line, or 75 once training
has saved a checkpoint. Each signal is sent when the process is provably at that point (its SIGTERM
handler shows in /proc, its run folder is locked), not after a guessed delay."""

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(sys.executable).parent / "sknet"
pytestmark = [
    pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask in /proc (Linux)"),
    pytest.mark.skipif(not SCRIPT.exists(), reason="the sknet command is not installed in this environment"),
]
TRAIN = ["train", "--dataset", "synthetic", "--device", "cpu", "--progress", "never", "--epochs", "50"]


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask >> (signal.SIGTERM - 1) & 1)


def wait_until(proc, ready) -> None:
    while proc.poll() is None and not ready():
        time.sleep(0.001)


def _as_a_foreground_command() -> None:
    # A shell starts background jobs (`cmd &`, CI runners, nohup'd scripts) with SIGINT ignored, and Python
    # keeps an inherited SIG_IGN: Ctrl-C reaches a command started from a terminal, so the child gets the
    # default disposition a terminal's foreground command has, whatever the suite was started from.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_the_command_starts_is_one_line_130(tmp_path, sig):
    args = [str(SCRIPT), *TRAIN, "--output", str(tmp_path / "run")]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, preexec_fn=_as_a_foreground_command)
    wait_until(proc, lambda: catches_sigterm(proc.pid))  # the launcher's first instruction is done
    proc.send_signal(sig)
    _, err = proc.communicate()
    assert proc.returncode == 130 and err.count("\n") == 1, err
    assert f"interrupted by {sig.name}" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_sigterm_while_a_run_is_prepared_is_130_or_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([str(SCRIPT), *TRAIN, "--output", str(out)], stderr=subprocess.PIPE, text=True)
    wait_until(proc, lambda: (out / ".lock").exists())  # the folder is claimed: data and model being built
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert "Traceback" not in err, err
    if proc.returncode == 130:  # before the loop (nearly always)
        assert err.count("\n") == 1 and "interrupted by SIGTERM" in err, err
        assert not out.exists() or (out / "config.yaml").exists()  # nothing half-made: no folder of a lone lock
    else:  # a very slow start: the loop was already running, and saved
        assert proc.returncode == 75 and "saved a resumable checkpoint" in err, err
