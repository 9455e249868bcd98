"""Device mapping under torchrun, the device-side input pipeline and the sync-free step (CPU checks here;
the CUDA ones at the end run only where CUDA is)."""

import pytest
import torch

from sknet.data.datasets import Split, make_synthetic
from sknet.data.device import DeviceLoader, Normalizer
from sknet.data.tensors import TensorBatchLoader
from sknet.errors import ConfigError
from sknet.train.distributed import Launch, resolve_device
from sknet.train.trainer import Trainer, TrainingDiverged
from tests.train.helpers import tiny_config

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture
def one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


def test_auto_maps_local_ranks_to_gpus_and_refuses_more_processes_than_gpus(one_gpu):
    assert resolve_device("auto", 0, 1) == torch.device("cuda:0")
    assert resolve_device("cuda", 0, 1) == torch.device("cuda:0")
    with pytest.raises(
        ConfigError, match=r"2 processes on this node but 1 visible GPU.*--nproc_per_node 1.*--device cpu"
    ):
        resolve_device("auto", 1, 2)
    with pytest.raises(ConfigError, match="2 processes on this node but 1 visible GPU"):
        resolve_device("cuda", 0, 2)  # rank 0 refuses too: no rank is left waiting for the others
    with pytest.raises(ConfigError, match=r"'cuda:3' requested but only 1 GPU"):
        resolve_device("cuda:3")
    assert resolve_device("cpu", 1, 2) == torch.device("cpu")


def test_device_names_are_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto", 3, 4) == torch.device("cpu")
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device("cuda")
    for bad in ("gpu", "cuda:x", "cuda:", 3):
        with pytest.raises(ConfigError, match="device must be"):
            resolve_device(bad)


def test_launch_reads_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert Launch.from_env() == Launch(3, 4, 1, 2)
    monkeypatch.setenv("LOCAL_RANK", "one")
    with pytest.raises(ConfigError, match="LOCAL_RANK='one'"):
        Launch.from_env()


@pytest.mark.parametrize("channels_last", [False, True])
def test_device_loader_normalises_uint8_batches(channels_last):
    data = make_synthetic(Split.TRAIN, channels=3, count=40)
    uint8 = TensorBatchLoader(data, 16, shuffle=True, seed=1)
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    expected = [((x.double() / 255 - mean) / std, y) for x, y in uint8]
    device = DeviceLoader(uint8, torch.device("cpu"), Normalizer(data.mean, data.std, channels_last))
    assert len(device) == len(expected) == 3
    batches = list(device)
    for (want_x, want_y), (x, y, skipped) in zip(expected, batches, strict=True):
        assert x.dtype == torch.float32 and skipped == []
        assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        torch.testing.assert_close(x, want_x.float(), rtol=1e-5, atol=1e-5)
        assert torch.equal(y, want_y)
    device.set_epoch(0, 2)
    assert len(list(device)) == 1


def test_a_non_finite_loss_applies_no_update_and_stops_at_the_next_read(tmp_path):
    """The step is skipped on the device (no host read); the run stops at the next read with the step named."""
    trainer = Trainer(tiny_config(tmp_path / "run", epochs=1))
    after_step: dict[int, dict[str, torch.Tensor]] = {}

    def poison(module, inputs, output):
        return output * float("nan") if trainer.run.batch == 4 and module.training else None

    trainer.model.register_forward_hook(poison)

    def record(epoch, batch):
        after_step[batch] = {k: p.detach().clone() for k, p in trainer.model.named_parameters()}

    trainer.on_step = record
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at epoch 1, batch 5; no update was applied"):
        trainer.fit()
    # Steps 5.. were skipped on the device: the weights are those after step 4, and finite.
    assert max(after_step) == len(trainer.train_loader)  # the epoch ran on to its read at the end
    for name, value in trainer.model.named_parameters():
        assert torch.equal(value.detach(), after_step[4][name]), name
        assert value.isfinite().all()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


@needs_cuda
def test_cuda_device_loader_matches_cpu_normalisation():
    data = make_synthetic(Split.TRAIN, channels=3, count=40)
    normalizer = Normalizer(data.mean, data.std, channels_last=True)
    cpu = list(DeviceLoader(TensorBatchLoader(data, 16), torch.device("cpu"), normalizer))
    gpu = list(DeviceLoader(TensorBatchLoader(data, 16), torch.device("cuda"), normalizer))
    for (xc, yc, _), (xg, yg, _) in zip(cpu, gpu, strict=True):
        assert xg.is_cuda and xg.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(xg.cpu(), xc)
        assert torch.equal(yg.cpu(), yc)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_cuda_training_with_autocast(tmp_path, precision):
    cfg = tiny_config(tmp_path / precision, epochs=1, device="cuda", precision=precision, channels_last=True)
    summary = Trainer(cfg).fit()
    assert summary["epochs"] == 1 and 0 < summary["val_loss"] < 10


@needs_cuda
def test_cuda_training_under_cuda_graphs(tmp_path):
    # --compile-mode reduce-overhead: each micro-batch marks a step's start (cudagraph trees), so a backward
    # never meets saved tensors that a later replay overwrote; the fused SK tail runs inside the graphs.
    cfg = tiny_config(tmp_path, epochs=2, device="cuda", precision="bf16", compile=True, compile_mode="reduce-overhead")
    summary = Trainer(cfg).fit()
    assert summary["epochs"] == 2 and 0 < summary["val_loss"] < 10


def test_only_cuda_graph_modes_mark_steps(tmp_path):
    from sknet.train.setup import step_marker

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    graphs = tiny_config(tmp_path, compile=True, compile_mode="reduce-overhead")
    assert step_marker(graphs, cuda) is torch.compiler.cudagraph_mark_step_begin
    assert step_marker(graphs, cpu)() is None  # no CUDA graphs on the CPU: nothing to mark
    for changes in ({"compile": False}, {"compile": True, "compile_mode": "max-autotune-no-cudagraphs"}):
        assert step_marker(tiny_config(tmp_path, **changes), cuda) is not torch.compiler.cudagraph_mark_step_begin


@pytest.mark.parametrize("channels_last", [True, False])
def test_image_folder_batches_honour_channels_last(tmp_path, channels_last):
    from PIL import Image

    from sknet.train.config import TrainConfig
    from sknet.train.distributed import DistInfo
    from sknet.train.setup import build_loaders

    for split in ("train", "val"):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 18), (40 * i, 90, 200)).save(tmp_path / split / c / f"{i}.png")
    config = TrainConfig(
        dataset="imagefolder",
        data_dir=str(tmp_path),
        image_size=16,
        batch_size=2,
        workers=0,
        channels_last=channels_last,
        device="cpu",
    )
    train, test = build_loaders(config, DistInfo())
    for loader in (train, test):
        loader.set_epoch(0)
        x, _, _ = next(iter(loader))
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 16, 16)
        assert x.is_contiguous(memory_format=torch.channels_last) == channels_last
