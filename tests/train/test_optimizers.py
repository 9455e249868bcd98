"""Every optimizer option trains: SGD (± Nesterov) and AdamW, fp32 and bf16, with and without gradient
accumulation and clipping, a few real steps each on CPU; and a non-finite loss still skips the update."""

import json

import pytest
import torch

from sknet.cli import main
from sknet.train.trainer import Trainer, TrainingDiverged
from tests.train.helpers import tiny_config

OPTIMIZERS = [("sgd", False, 0.05), ("sgd", True, 0.05), ("adamw", False, 2e-3)]
SWEEP = [
    (opt, nesterov, lr, precision, accum, clip)
    for opt, nesterov, lr in OPTIMIZERS
    for precision in ("fp32", "bf16")
    for accum in (1, 2)
    for clip in (None, 0.5)
]
IDS = [f"{o}{'-nesterov' if n else ''}-{p}-accum{a}-clip{c}" for o, n, _, p, a, c in SWEEP]


def sweep_config(path, opt, nesterov, lr, precision, accum, clip, **changes):
    return tiny_config(
        path,
        optimizer=opt,
        nesterov=nesterov,
        lr=lr,
        precision=precision,
        accum_steps=accum,
        grad_clip=clip,
        batch_size=16 // accum,
        warmup_epochs=0.0,
        epochs=1,
        **changes,
    )


@pytest.mark.parametrize(("opt", "nesterov", "lr", "precision", "accum", "clip"), SWEEP, ids=IDS)
def test_every_optimizer_option_trains_and_skips_non_finite_steps(tmp_path, opt, nesterov, lr, precision, accum, clip):
    args = (opt, nesterov, lr, precision, accum, clip)
    trainer = Trainer(sweep_config(tmp_path / "ok", *args, max_steps=4, step_log_every=1))
    start = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    losses = [json.loads(line)["loss"] for line in (tmp_path / "ok" / "steps.jsonl").read_text().splitlines()]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))
    assert len(set(losses)) > 1  # the weights move, so does the loss
    moved = [not torch.equal(a, b) for a, b in zip(start, trainer.model.parameters(), strict=True)]
    assert all(moved), "every parameter is updated"
    assert trainer.optimizer.state, "the optimizer keeps its state (momentum / moments)"

    # The second step's loss is made NaN: from it on no update is applied (weights and optimizer state stay
    # those after the first step), and the run stops naming the step.
    poisoned = Trainer(sweep_config(tmp_path / "nan", *args, max_steps=4))
    snapshot = {}

    def poison(module, inputs, output):
        return output * float("nan") if snapshot else None

    def after_step(epoch, batch):
        if not snapshot:
            snapshot["params"] = [p.detach().clone() for p in poisoned.model.parameters()]
            snapshot["optim"] = {
                i: {k: v.clone() for k, v in s.items()} for i, s in enumerate(poisoned.optimizer.state.values())
            }

    poisoned.on_step = after_step
    poisoned.model.fc.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=f"batch {2 * accum}"):
        poisoned.fit()
    for before, after in zip(snapshot["params"], poisoned.model.parameters(), strict=True):
        assert torch.equal(before, after)
    for i, state in enumerate(poisoned.optimizer.state.values()):
        for key, value in state.items():
            assert torch.equal(snapshot["optim"][i][key], value), key


def test_the_adamw_command_of_a_new_user_trains(tmp_path, capsys):
    code = main(
        [
            "train",
            "--model",
            "sknet_tiny",
            "--dataset",
            "synthetic",
            "--optimizer",
            "adamw",
            "--max-steps",
            "3",
            "--device",
            "cpu",
            "--output",
            str(tmp_path / "run"),
            "--progress",
            "never",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "stopped at max_steps=3" in capsys.readouterr().out
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_a_training_option_is_one_declaration():
    """adamw_beta2 is declared once (sknet.train.config): the flag, its help, the validation, the resume
    policy and its place among the optimizer's arguments (TrainConfig.optimizer_kwargs) are in that file."""
    import argparse

    from sknet.cli import train_cmd
    from sknet.errors import ConfigError
    from sknet.train.config import CHECKS, HELP, RESUME_CHANGEABLE, TrainConfig
    from sknet.train.optim import build_optimizer

    parser = argparse.ArgumentParser()
    train_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--optimizer", "adamw", "--adamw-beta2", "0.98"])
    config = train_cmd.config_from_args(args)
    assert config.adamw_beta2 == 0.98 and "adamw_beta2" in CHECKS and "beta2" in HELP["adamw_beta2"]
    assert "adamw_beta2" not in RESUME_CHANGEABLE  # the run's optimisation stays as saved
    model = torch.nn.Linear(3, 2)
    assert build_optimizer(model, config).param_groups[0]["betas"] == (0.9, 0.98)
    with pytest.raises(ConfigError, match=r"adamw_beta2 must be a finite number in \[0, 1\), got 1.5"):
        TrainConfig(adamw_beta2=1.5)
