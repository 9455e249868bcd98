"""torchrun support: process-group set-up (NCCL on GPUs, gloo on CPUs), device mapping and rank helpers."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from sknet.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    # Processes of this job on this machine: torchrun's local processes, or more when several launchers
    # share one machine (each then sees LOCAL_WORLD_SIZE=1). Found by comparing host names.
    machine_processes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


@dataclass(frozen=True)
class Launch:
    """What torchrun (or nothing) says about this process: its ranks and how many share the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> Launch:
        def read(name: str, default: int) -> int:
            value = os.environ.get(name, str(default))
            try:
                return int(value)
            except ValueError:
                raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None

        world_size = read("WORLD_SIZE", 1)
        local_world_size = read("LOCAL_WORLD_SIZE", world_size)
        return cls(read("RANK", 0), world_size, read("LOCAL_RANK", 0), local_world_size)


def resolve_device(name: str, local_rank: int = 0, local_world_size: int = 1) -> torch.device:
    """The torch.device for `name` ('auto', 'cpu', 'cuda', 'cuda:N') in the process `local_rank` of a node.

    'auto' and 'cuda' map local rank r to cuda:r; more processes on a node than visible GPUs is a
    ConfigError naming both numbers (checked before any process group or CUDA context is created).
    """
    if not isinstance(name, str):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if name != "cuda" and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ConfigError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {name!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use --device cpu)")
    count = torch.cuda.device_count()
    if name == "cuda":
        if local_world_size > count or local_rank >= count:
            raise ConfigError(
                f"{max(local_world_size, local_rank + 1)} processes on this node but {count} visible GPU(s): "
                f"start at most {count} (torchrun --nproc_per_node {count}) or train on CPUs with --device cpu"
            )
        return torch.device(f"cuda:{local_rank}")
    index = int(name[5:])
    if index >= count:
        raise ConfigError(f"device {name!r} requested but only {count} GPU(s) are visible (cuda:0..cuda:{count - 1})")
    return torch.device(name)


def init_distributed(device_name: str) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); otherwise a single process."""
    launch = Launch.from_env()
    device = resolve_device(device_name, launch.local_rank, launch.local_world_size)
    if launch.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # The store through torch's own env:// rendezvous, under a prefix of this attempt: torchrun restarts
        # (--max-restarts) reuse its store, where the dead attempt's addresses would be read back (gloo then
        # connects to closed ports until it times out).
        store, rank, world_size = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        store = dist.PrefixStore(f"sknet/attempt-{attempt}/", store)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo", store=store, rank=rank, world_size=world_size
        )
    here = launch.local_world_size
    if launch.world_size > 1:
        hosts: list[str | None] = [None] * launch.world_size
        dist.all_gather_object(hosts, socket.gethostname())
        here = hosts.count(socket.gethostname())
    return DistInfo(launch.rank, launch.world_size, launch.local_rank, device, here)


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum plain numbers over ranks (a collective and a host read: for per-epoch totals, not per step)."""
    if not info.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return t.tolist()


def all_reduce_(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum a device tensor over ranks in place; no host read (NCCL queues it on the current stream)."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers on every rank. Each rank updates its BatchNorm running statistics with its own
    batches after DDP's last broadcast; evaluating with rank 0's, which are the ones its checkpoint holds,
    gives the same record whether or not the run was interrupted and resumed there."""
    if info.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


class HostAgreement:
    """Decisions every rank must take together, made from numbers the host already knows (how many
    images a batch kept): a gloo all-reduce of a CPU tensor, so no device synchronisation even under
    NCCL. Building one is a collective (every rank, at the same point)."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.group = None
        if info.enabled and dist.get_backend() != "gloo":
            self.group = dist.new_group(backend="gloo")

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is True on any rank."""
        if not self.info.enabled:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.group)
        return bool(t.item())


def gather_lists(items: list, info: DistInfo) -> list:
    """Every rank's `items`, concatenated in rank order (a collective under torchrun; for per-epoch records)."""
    if not info.enabled:
        return list(items)
    gathered: list[list | None] = [None] * info.world_size
    dist.all_gather_object(gathered, list(items))
    return [item for part in gathered for item in (part or [])]


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_rng(info: DistInfo | None) -> list[dict]:
    """Every rank's RNG state (a collective under torchrun), or this process's alone when `info` is None."""
    import io

    from sknet.train.state import rng_state

    rng = rng_state()
    if info is None or not info.enabled:
        return [rng]
    # Gather serialized bytes: all_gather_object cannot pickle the RNG tensors themselves.
    buffer = io.BytesIO()
    torch.save(rng, buffer)
    gathered: list[bytes | None] = [None] * info.world_size
    dist.all_gather_object(gathered, buffer.getvalue())
    return [torch.load(io.BytesIO(b), weights_only=True) for b in gathered]
