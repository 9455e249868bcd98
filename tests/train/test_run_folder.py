"""Run folders: never silently overwritten, one writer at a time, `--resume RUN` alone, finished runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from sknet.cli import main
from sknet.errors import ConfigError
from sknet.train.run_folder import RunFolder
from sknet.train.trainer import Trainer
from sknet.weights import read_weights
from tests.train.helpers import state_equal, tiny_config
from tests.train.test_faults import train_argv


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != ".lock"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(tiny_config(out, epochs=1)).fit()
    return out


def test_a_folder_holding_a_run_is_refused_and_left_as_it_was(finished):
    before = snapshot(finished)
    with pytest.raises(ConfigError, match=f"{finished} already holds a run: continue it with --resume"):
        Trainer(tiny_config(finished, max_steps=3))
    assert snapshot(finished) == before


def test_overwrite_moves_the_old_run_aside(tmp_path):
    out = tmp_path / "run"
    Trainer(tiny_config(out, epochs=1)).fit()
    before = snapshot(out)
    Trainer(tiny_config(out, epochs=1, seed=9), overwrite=True).fit()
    (moved,) = tmp_path.glob("run.replaced-*")
    assert snapshot(moved) == before  # nothing of the old run is lost
    assert snapshot(out)["model.safetensors"] != before["model.safetensors"]


def test_a_second_writer_is_refused_and_a_dead_one_leaves_no_lock(tmp_path):
    out = tmp_path / "run"
    holder = RunFolder(out)
    holder.claim(False)
    result = subprocess.run(train_argv(out), capture_output=True, text=True)
    assert result.returncode == 2 and f"another process (pid {os.getpid()}) is writing a run to {out}" in result.stderr
    holder.release()
    # A process holding the lock dies by SIGKILL: the lock goes with it.
    code = (
        "import pathlib, time; from sknet.train.run_folder import RunFolder; "
        f"held = RunFolder(pathlib.Path({str(out)!r})); held.claim(False); print('locked', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match="another process"):
        RunFolder(out).claim(False)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    (out / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")  # what a kill during a save leaves
    folder = RunFolder(out)
    folder.claim(False)
    assert not (out / ".checkpoint.pt.abc.tmp").exists()
    folder.release()


def test_resume_with_the_run_folder_alone(tmp_path, capsys):
    straight, out = tmp_path / "straight", tmp_path / "run"
    assert main(train_argv(straight)[3:]) == 0
    assert main([*train_argv(out)[3:], "--max-steps", "20"]) == 0  # stops in epoch 2
    before = snapshot(out)
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0  # the saved configuration: still stops at step 20
    said = capsys.readouterr().out
    assert "stopped at max_steps=20 (epoch 2, batch" in said and "--max-steps none to continue" in said, said
    assert "done:" not in said and snapshot(out) == before  # nothing trained, no file changed
    assert json.loads((out / "summary.json").read_text())["epochs"] == 1
    assert main(["train", "--resume", str(out), "--max-steps", "15"]) == 0
    assert "is at step 20, past max_steps=15" in capsys.readouterr().out and snapshot(out) == before
    # The checkpoint file alone is enough too; --max-steps is a change that is allowed, null lifts it.
    assert main(["train", "--resume", str(out / "checkpoint.pt"), "--max-steps", "null"]) == 0
    state_equal(read_weights(straight / "model.safetensors")[0], read_weights(out / "model.safetensors")[0], atol=0)


def test_resume_refuses_a_changed_option_and_names_it(finished, capsys):
    before = snapshot(finished)
    assert main(["train", "--resume", str(finished), "--lr", "0.5", "--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "cannot change --lr (0.05 → 0.5) when resuming" in err and err.count("\n") == 1
    assert main(["train", "--resume", str(finished / "checkpoint.pt"), "--set", "drop_rate=0.3"]) == 2
    assert "--model-options" in capsys.readouterr().err
    assert snapshot(finished) == before


def test_resuming_a_finished_run_changes_nothing(finished, capsys):
    before = snapshot(finished)
    time.sleep(0.01)
    assert main(["train", "--resume", str(finished), "--progress", "never"]) == 0
    assert "is finished (1 of 1 epoch); nothing to do" in capsys.readouterr().out
    assert snapshot(finished) == before
    assert json.loads(before["summary.json"])["epochs"] == 1


def test_boolean_flags_named_no_mean_what_they_say():
    from sknet.cli.main import build_parser
    from sknet.cli.train_cmd import config_from_args

    parse = build_parser().parse_args
    assert config_from_args(parse(["train", "--no-decay-bn-bias"])).no_decay_bn_bias is True
    assert config_from_args(parse(["train", "--decay-bn-bias"])).no_decay_bn_bias is False
    assert config_from_args(parse(["train", "--no-hflip"])).hflip is False
    assert config_from_args(parse(["train", "--deterministic"])).deterministic is True


def test_a_run_that_died_before_its_first_checkpoint_restarts_with_resume(tmp_path, monkeypatch, capsys):
    class Killed(BaseException):  # what kill -9 during the first checkpoint write leaves, in-process
        pass

    def die(*args, **kwargs):
        (out / ".checkpoint.pt.x.tmp").write_bytes(b"half")
        raise Killed

    out = tmp_path / "run"
    argv = train_argv(out)[3:]
    monkeypatch.setattr("sknet.train.trainer.write_checkpoint", die)
    with pytest.raises(Killed):
        main(argv)
    monkeypatch.undo()
    assert (out / "config.yaml").is_file() and not (out / "checkpoint.pt").exists()
    assert main(argv) == 2  # a rerun is refused, pointing at --resume ...
    assert f"continue it with --resume {out}" in capsys.readouterr().err
    assert main(["train", "--resume", str(out)]) == 0  # ... which starts it again, from step 0
    said = capsys.readouterr().out
    assert "holds no checkpoint (its run stopped before the first): starting it again from step 0" in said
    (moved,) = tmp_path.glob("run.replaced-*")  # the dead run's files, kept
    assert (moved / "config.yaml").is_file() and (out / "checkpoint.pt").is_file()
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 4
    assert "no checkpoint to resume" in capsys.readouterr().err
