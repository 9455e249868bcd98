"""A resume that changes the length of training (--epochs) continues on the schedule of the new length, for
every schedule: from the step it reached, the learning rate is the one a run configured with that length
from the start has there (README, "--resume RUN"). Was: the schedule's length came back from the
checkpoint, so a finished 2-epoch cosine run resumed with --epochs 4 trained epochs 3-4 at lr 0."""

import json
import logging

import pytest

from sknet.train.trainer import Trainer
from tests.train.helpers import tiny_config

SCHEDULES = {
    "cosine": {"schedule": "cosine"},
    "step": {"schedule": "step", "step_epochs": 1, "gamma": 0.5},
    "constant": {"schedule": "constant"},
}


def _lrs(out):
    return [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_a_longer_resume_continues_on_the_schedule_of_the_new_length(tmp_path, caplog, schedule):
    options = {**SCHEDULES[schedule], "warmup_epochs": 0.5}
    Trainer(tiny_config(tmp_path / "whole", epochs=4, **options)).fit()
    Trainer(tiny_config(tmp_path / "run", epochs=2, **options)).fit()
    with caplog.at_level(logging.INFO, logger="sknet"):
        longer = tiny_config(tmp_path / "run", epochs=4, **options)
        Trainer(longer, resume=tmp_path / "run" / "checkpoint.pt").fit()
    whole, resumed = _lrs(tmp_path / "whole"), _lrs(tmp_path / "run")
    assert resumed[2:] == pytest.approx(whole[2:], rel=1e-12)  # epochs 3-4 on the 4-epoch schedule
    said = [r.getMessage() for r in caplog.records if "learning-rate schedule" in r.getMessage()]
    if schedule == "cosine":
        assert resumed[1] == 0 and resumed[2] > 0  # the 2-epoch cosine had ended at 0
        assert len(said) == 1 and "cosine, 4 epochs" in said[0] and "goes from 0 " in said[0], said
    else:  # their lr does not depend on the length: nothing changes, nothing is said
        assert resumed == pytest.approx(whole, rel=1e-12) and not said


def test_a_shorter_resume_ends_the_cosine_at_the_new_end(tmp_path):
    Trainer(tiny_config(tmp_path / "run", epochs=4, max_steps=24)).fit()  # stopped in epoch 2 of 4 (16 steps each)
    Trainer(tiny_config(tmp_path / "whole", epochs=3)).fit()
    Trainer(tiny_config(tmp_path / "run", epochs=3), resume=tmp_path / "run" / "checkpoint.pt").fit()
    assert _lrs(tmp_path / "run")[-1] == 0 == _lrs(tmp_path / "whole")[-1]
    assert _lrs(tmp_path / "run")[1:] == pytest.approx(_lrs(tmp_path / "whole")[1:], rel=1e-12)
