"""The modern recipe in training: weight EMA, mixing, drop path, auto-augment, random erasing; its options
through YAML, flags and resume; and exact resume with every option on."""

import json

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from sknet.cli import main
from sknet.errors import ConfigError
from sknet.train.config import TrainConfig
from sknet.train.ema import WeightEMA, ema_decay
from sknet.train.trainer import Trainer
from sknet.weights import load_checkpoint, read_weights
from tests.train.helpers import state_equal, tiny_config


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(16, 3))


def perturb(model, step):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        model(torch.randn(5, 2, 4, 4) + step)  # BN running statistics move too (train mode)


def test_ema_equals_the_closed_form_and_torchs_own_update_after_k_steps():
    model, decay, k = small_net(), 0.9, 6
    ema = WeightEMA(model, decay)
    torchs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    seen = []
    for step in range(k):
        perturb(model, step)
        seen.append({n: t.detach().clone() for n, t in model.state_dict().items()})
        ema.update(model)
        torchs.update_parameters(model)
    for name, value in ema.module.state_dict().items():
        if not value.is_floating_point():  # num_batches_tracked: copied
            assert torch.equal(value, seen[-1][name])
            continue
        # W_1 copied, then ema ← d·ema + (1 − d)·W_j: ema_k = d^(k−1) W_1 + Σ_{j≥2} (1 − d) d^(k−j) W_j
        closed = decay ** (k - 1) * seen[0][name]
        for j in range(2, k + 1):
            closed = closed + (1 - decay) * decay ** (k - j) * seen[j - 1][name]
        torch.testing.assert_close(value, closed, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(value, torchs.module.state_dict()[name], rtol=0, atol=1e-7, msg=name)
    assert ema.updates == k and int(torchs.n_averaged) == k


def test_ema_warmup_is_timms():
    timm_utils = pytest.importorskip("timm.utils")
    reference = timm_utils.ModelEmaV3(small_net(), decay=0.999, use_warmup=True)
    for updates in range(0, 300, 7):  # timm is called with step = updates done so far, including this one
        assert ema_decay(0.999, updates, True) == pytest.approx(reference.get_decay(updates + 1), abs=1e-12)
    assert ema_decay(0.999, 5, False) == 0.999 and ema_decay(0.999, 0, False) == 0.0


def test_ema_is_evaluated_beside_the_weights_and_written_when_asked(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "ema", epochs=1, ema_decay=0.9, ema_warmup=True, weights_from="ema"))
    trainer.fit()
    row = json.loads((tmp_path / "ema" / "metrics.jsonl").read_text())
    assert {"val_acc1", "val_ema_acc1", "val_ema_loss"} <= row.keys()
    assert row["val_ema_loss"] != row["val_loss"]
    saved, _ = read_weights(tmp_path / "ema" / "model.safetensors")
    state_equal(saved, trainer.recipe.ema.module.state_dict(), atol=0)
    checkpoint = load_checkpoint(tmp_path / "ema" / "checkpoint.pt")
    assert checkpoint["recipe"]["ema"]["n_averaged"] == len(trainer.train_loader)
    raw = Trainer(tiny_config(tmp_path / "raw", epochs=1, ema_decay=0.9))
    raw.fit()
    saved, _ = read_weights(tmp_path / "raw" / "model.safetensors")
    state_equal(saved, raw.model.state_dict(), atol=0)


def test_weights_from_ema_without_an_ema_is_refused_before_work(tmp_path):
    with pytest.raises(ConfigError, match="needs an EMA: add --ema-decay"):
        Trainer(tiny_config(tmp_path / "x", weights_from="better"))


EVERYTHING = dict(
    mixup=0.4,
    cutmix=1.0,
    mixup_switch_prob=0.5,
    auto_augment="rand-m9-mstd0.5",
    random_erase=0.5,
    aug_repeats=2,
    ema_decay=0.95,
    ema_warmup=True,
    weights_from="better",
    label_smoothing=0.1,
    model_options={"drop_rate": 0.1, "drop_path_rate": 0.2},
)


def test_exact_resume_mid_epoch_with_every_option_on(tmp_path):
    straight = Trainer(tiny_config(tmp_path / "a", **EVERYTHING))
    straight.fit()
    total = len(straight.train_loader)
    cut = Trainer(tiny_config(tmp_path / "b", max_steps=total + total // 2, **EVERYTHING))
    cut.fit()
    assert load_checkpoint(tmp_path / "b" / "checkpoint.pt")["batch"] == total // 2
    resumed = Trainer(tiny_config(tmp_path / "b", **EVERYTHING), resume=tmp_path / "b" / "checkpoint.pt")
    resumed.fit()
    state_equal(straight.model.state_dict(), resumed.model.state_dict(), atol=0)  # parameters and buffers
    state_equal(straight.recipe.ema.state_dict(), resumed.recipe.ema.state_dict(), atol=0)
    a, b = (json.loads((tmp_path / r / "metrics.jsonl").read_text().splitlines()[-1]) for r in "ab")
    assert a["val_ema_acc1"] == b["val_ema_acc1"] and a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-12)


RECIPE_FLAGS = [
    "--mixup",
    "0.8",
    "--cutmix",
    "1.0",
    "--mixup-prob",
    "0.9",
    "--mixup-switch-prob",
    "0.3",
    "--auto-augment",
    "rand-m7-n1",
    "--random-erase",
    "0.25",
    "--aug-repeats",
    "3",
    "--ema-decay",
    "0.99",
    "--ema-warmup",
    "--weights-from",
    "better",
    "--set",
    "drop_path_rate=0.1",
]
RECIPE_VALUES = dict(
    mixup=0.8,
    cutmix=1.0,
    mixup_prob=0.9,
    mixup_switch_prob=0.3,
    auto_augment="rand-m7-n1",
    random_erase=0.25,
    aug_repeats=3,
    ema_decay=0.99,
    ema_warmup=True,
    weights_from="better",
)


def test_recipe_options_round_trip_through_flags_yaml_and_resume(tmp_path, capsys):
    from sknet.cli.main import build_parser
    from sknet.cli.train_cmd import config_from_args

    out = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--device", "cpu", "--output", str(out), *RECIPE_FLAGS]
    config = config_from_args(build_parser().parse_args(argv))
    assert {k: getattr(config, k) for k in RECIPE_VALUES} == RECIPE_VALUES
    assert config.model_options == {"drop_path_rate": 0.1}
    config.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == config

    base = ["train", "--dataset", "synthetic", "--device", "cpu", "--progress", "never", "--epochs", "1"]
    assert main([*base, "--output", str(out), "--max-steps", "1", *RECIPE_FLAGS]) == 0
    saved = TrainConfig.load(out / "config.yaml")
    assert {k: getattr(saved, k) for k in RECIPE_VALUES} == RECIPE_VALUES
    capsys.readouterr()
    # Resuming keeps them; changing one that shapes the training is refused in one line; weights_from may change.
    assert main(["train", "--resume", str(out), "--mixup", "0.2"]) == 2
    err = capsys.readouterr().err
    assert "cannot change --mixup (0.8 → 0.2)" in err and err.count("\n") == 1
    # (A run stopped at its max_steps resumes only when told to go on: then it trains and records the change.)
    go_on = ["--max-steps", "none", "--weights-from", "ema", "--progress", "never"]
    assert main(["train", "--resume", str(out), *go_on]) == 0
    assert TrainConfig.load(out / "config.yaml").weights_from == "ema"
    saved, _ = read_weights(out / "model.safetensors")
    state_equal(
        saved,
        {
            k[7:]: v
            for k, v in load_checkpoint(out / "checkpoint.pt")["recipe"]["ema"].items()
            if k.startswith("module.")
        },
        atol=0,
    )


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--mixup", "-0.1"], "mixup"),
        (["--cutmix", "-1"], "cutmix"),
        (["--mixup-prob", "1.5"], "mixup_prob"),
        (["--mixup-switch-prob", "-0.5"], "mixup_switch_prob"),
        (["--random-erase", "2"], "random_erase"),
        (["--aug-repeats", "-1"], "aug_repeats"),
        (["--ema-decay", "1"], "ema_decay"),
        (["--ema-decay", "0"], "ema_decay"),
        (["--auto-augment", "rand-m99"], "auto_augment"),
        (["--weights-from", "best"], "weights_from"),
        (["--set", "drop_path_rate=1.0"], "drop_path_rate"),
    ],
)
def test_out_of_range_recipe_values_are_one_line(capsys, argv, field):
    code = main(["train", "--dataset", "synthetic", "--device", "cpu", "--output", "/nonexistent/x", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert field in err or field.replace("_", "-") in err, err
