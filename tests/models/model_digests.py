"""Digests of what a model computes, for comparing two builds of sknet bit for bit on one machine.

Run as a script with the sknet to digest first on PYTHONPATH: prints one JSON object mapping
"<model>/<case>" to a SHA-256 of the bytes involved. Cases, per model: its parameter count and weight
names (built on the meta device, every registered model); and, for one model of each family and kind,
logits and every gradient of one training step (train mode, fp32 and bf16 autocast) and logits in eval
mode, on a fixed random batch. Used by tests/models/test_bit_identity.py.
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch

# One model of each family and kind of unit: ResNeXt/SE/SK bottlenecks (26 layers: the code of 50 and 101 too),
# the ablations' options (a true 5×5 with its own groups, M = 3, the plain sum) on that network, the compact
# and CIFAR networks, the lightweight ones. Inputs are small (the last maps are 1×1 or 2×2): two processes
# take about a minute. (label: (registered name, builder options, input channels, input side))
RUN = {
    "sknet26": ("sknet26", {}, 3, 32),
    "resnext26": ("resnext26", {}, 3, 32),
    "senet26": ("senet26", {}, 3, 32),
    "sknet26_k5g64": ("sknet26", {"branches": "3d1,5d1g64"}, 3, 32),
    "sknet26_k3k5k7": ("sknet26", {"branches": "3,5,7"}, 3, 32),
    "sknet26_sum": ("sknet26", {"aggregation": "sum"}, 3, 32),
    "sknet_tiny": ("sknet_tiny", {}, 1, 28),
    "resnext_tiny": ("resnext_tiny", {}, 1, 28),
    "sknet29": ("sknet29", {}, 3, 8),
    "shufflenetv2_050_sk": ("shufflenetv2_050_sk", {}, 3, 64),
    "shufflenetv2_050_se": ("shufflenetv2_050_se", {}, 3, 64),
    "mobilenetv2_100_sk": ("mobilenetv2_100_sk", {}, 3, 64),
}
BATCH = 3


def digest(*tensors: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def structure(name: str) -> str:
    from sknet.models import create_model

    with torch.device("meta"):
        model = create_model(name)
    state = model.state_dict()
    count = sum(p.numel() for p in model.parameters())
    return hashlib.sha256(json.dumps([count, [(k, list(v.shape)) for k, v in state.items()]]).encode()).hexdigest()


def computation(name: str, options: dict, channels: int, size: int) -> dict[str, str]:
    from sknet.models import create_model

    out = {}
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=channels, **options)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, channels, size, size, generator=gen)
    y = torch.randint(0, 10, (BATCH,), generator=gen)
    for precision in ("fp32", "bf16"):
        model.load_state_dict(start)
        model.train()
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits = model(x)
        torch.nn.functional.cross_entropy(logits.float(), y).backward()
        grads = [p.grad for p in model.parameters()]
        out[f"train-{precision}/logits"] = digest(logits)
        out[f"train-{precision}/grads"] = digest(*grads)
        out[f"train-{precision}/buffers"] = digest(*model.buffers())
        model.eval()
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out[f"eval-{precision}/logits"] = digest(model(x))
    return out


def main() -> None:
    from sknet.models import list_models

    torch.set_num_threads(1)  # one summation order, whatever the machine's cores
    result = {f"{name}/structure": structure(name) for name in list_models()}
    for label, (name, options, channels, size) in RUN.items():
        result.update({f"{label}/{case}": value for case, value in computation(name, options, channels, size).items()})
    json.dump(result, sys.stdout, indent=0, sort_keys=True)


if __name__ == "__main__":
    main()
