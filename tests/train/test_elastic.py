"""Many nodes and jobs that heal, on one machine: two torchrun launchers (--nnodes 2, c10d rendezvous on
the loopback address, gloo) train exactly as one launcher with 2 processes; with --max-restarts a worker
killed with SIGKILL mid-epoch is restarted by torchrun and the run finishes with the same weights."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ARGS = ["train", "--model", "sknet_tiny", "--dataset", "synthetic", "--epochs", "3", "--batch-size", "8",
        "--lr", "0.02", "--seed", "5", "--deterministic", "--progress", "never", "--device", "cpu",
        "--set", "min_dim=8"]  # fmt: skip

# A worker that kills itself (SIGKILL, no handler can run) on the first attempt, rank 1, epoch 2, batch 5.
KILL_ONCE = """
import os, signal, sys
from sknet.train import trainer

init = trainer.Trainer.__init__


def killing_init(self, *args, **kwargs):
    init(self, *args, **kwargs)
    if os.environ["RANK"] == "1" and os.environ["TORCHELASTIC_RESTART_COUNT"] == "0":
        def on_step(epoch, batch):
            if (epoch, batch) == (1, 5):
                os.kill(os.getpid(), signal.SIGKILL)
        self.on_step = on_step


trainer.Trainer.__init__ = killing_init
from sknet.cli.main import main
sys.exit(main(sys.argv[1:]))
"""
HANG_GUARD = 900  # seconds: only a deadlock comes near this (each run takes seconds)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(nnodes: int, nproc: int, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc-per-node", str(nproc),
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"job{port}",
            "--local-addr", "127.0.0.1", "--monitor-interval", "0.5", *extra]  # fmt: skip


ENV = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONWARNINGS": "ignore"}
ENV.pop("OMP_NUM_THREADS", None)


def _run(command: list[str]) -> str:
    # wall-clock: a guard against a hung gloo rendezvous only, far above the run's time on a busy machine
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=HANG_GUARD)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "model.safetensors")


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def one_node(tmp_path_factory):
    """The reference: one launcher, 2 processes."""
    run = tmp_path_factory.mktemp("elastic") / "one-node"
    _run([*_launcher(1, 2, _port()), "-m", "sknet", *ARGS, "--output", str(run)])
    return run


@pytest.mark.slow
def test_two_launchers_as_two_nodes_equal_one_node_with_two_processes(one_node, tmp_path):
    port = _port()
    command = [*_launcher(2, 1, port), "-m", "sknet", *ARGS, "--output", str(tmp_path / "two-nodes")]
    nodes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV)
             for _ in range(2)]  # fmt: skip
    # wall-clock: a guard against a hung gloo rendezvous only, far above the run's time on a busy machine
    outputs = [node.communicate(timeout=HANG_GUARD)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    _same(_weights(one_node), _weights(tmp_path / "two-nodes"))
    # Each launcher sees 1 local process, but the 2 processes share this machine: threads are divided.
    cores = len(os.sched_getaffinity(0))
    line = f"threads: {max(1, cores // 2)} per process ({cores} cores ÷ 2 processes of this run on this machine"
    assert all(line in output for output in outputs)


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_is_restarted_and_the_run_resumes_by_itself(one_node, tmp_path):
    script = tmp_path / "kill_once.py"
    script.write_text(KILL_ONCE)
    run = tmp_path / "healed"
    output = _run([*_launcher(1, 2, _port(), "--max-restarts", "2"), str(script), *ARGS, "--output", str(run)])
    assert f"restart 1 by torchrun: resuming {run / 'checkpoint.pt'}" in output
    _same(_weights(one_node), _weights(run))
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 3  # every epoch recorded once
