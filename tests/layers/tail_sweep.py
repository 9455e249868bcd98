"""Every option of the SK layer × every fast tail × training/evaluation × precision: the tail equals the layer's own
forward (V, every gradient, running statistics) or declines the call.

Used in-process for the CPU tail (tests/layers/test_sk_tails.py) and in Triton's interpreter for the CUDA one
(tests/kernels/sk_tail_parity.py, case "sweep"). A new SK option (a norm, a gate, a path form) added to the
tables below is checked against every tail; a tail that computes it wrongly fails here instead of declining.
"""

from __future__ import annotations

import contextlib
import copy
import itertools

import torch

from sknet import SKConv2d

NORMS = ("batchnorm", "frozen", "syncbn", "groupnorm")
# (branches, aggregation): M = 1..4 with attention, and the plain sum
LAYOUTS = {
    "M1": ("3", "sk"),
    "M2": ("3,5", "sk"),
    "M3": ("3,5,7", "sk"),
    "M4": ("3,5,7,9", "sk"),
    "sum": ("3,5", "sum"),
}
MODES = ("train", "eval", "eval-grad")  # eval-grad: a gradient through a layer in evaluation mode
PRECISIONS = ("fp64", "fp32", "bf16-autocast")
# Relative to the largest value compared. bf16 autocast: both sides are compared with the fp64 forward, and the
# tail must be as close to it as the forward's own lines in bf16 are (on CPUs oneDNN's bf16 convolutions of
# dilated paths are themselves far off, so a fixed tolerance between the two would say nothing).
TOLERANCE = {"fp64": 1e-9, "fp32": 5e-5, "bf16-autocast": 3e-2}


def make(norm: str, layout: str, mode: str, precision: str, device: str):
    """(layer, x, dL/dV) of one case, with the norms away from their identity initialisation."""
    torch.manual_seed(0)
    branches, aggregation = LAYOUTS[layout]
    layer = SKConv2d(16, 24, stride=2, groups=4, min_dim=8, branches=branches, aggregation=aggregation, norm_layer=norm)
    with torch.no_grad():
        for m in layer.modules():
            if getattr(m, "running_mean", None) is not None:
                m.running_mean.uniform_(-0.3, 0.3), m.running_var.uniform_(0.5, 2.0)
            if isinstance(getattr(m, "weight", None), torch.Tensor) and not isinstance(m, torch.nn.Conv2d):
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.5, 0.5)
    dtype = torch.float64 if precision == "fp64" else torch.float32
    layer = layer.to(device, dtype).train(mode == "train")
    x = torch.randn(4, 16, 9, 7, device=device, dtype=dtype)
    return layer, x, torch.randn(4, 24, 5, 4, device=device, dtype=dtype)


def _context(mode: str, precision: str, device: str):
    stack = contextlib.ExitStack()
    if precision == "bf16-autocast":
        stack.enter_context(torch.autocast(device, dtype=torch.bfloat16))
    if mode == "eval":
        stack.enter_context(torch.no_grad())
    return stack


def _run(layer: SKConv2d, x: torch.Tensor, grad: torch.Tensor, mode: str, precision: str, device: str):
    """(tail that ran, {what: value} for V, dL/dx, every dL/dθ and every buffer after the call)."""
    x = x.clone().requires_grad_(mode != "eval")
    with _context(mode, precision, device):
        ran = layer.tail_for(x)
        out = layer(x)
    values = {"V": out.float()}
    if mode != "eval":
        out.backward(grad.to(out.dtype))
        values["dL/dx"] = x.grad
        values.update({f"dL/d{name}": p.grad for name, p in layer.named_parameters()})
    values.update({name: b.float() for name, b in layer.named_buffers()})
    return ran, values


def _error(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want.double()).abs().max().item()


def close(got: torch.Tensor | None, want: torch.Tensor | None, tol: float, what: str, truth=None) -> None:
    """|got − want| ≤ tol·scale; with `truth` (a more precise value of both): |got − truth| ≤ 2·|want − truth|
    + tol·scale, i.e. got is as close to the truth as want is."""
    assert (got is None) == (want is None), f"{what}: a gradient on one side only"
    if want is None:
        return
    reference = want if truth is None else truth
    scale = max(reference.abs().max().item(), 1.0)
    error = _error(got, reference)
    allowed = tol * scale + (0.0 if truth is None else 2 * _error(want, truth))
    assert error <= allowed, f"{what}: max error {error:.3g} > {allowed:.3g} (scale {scale:.3g})"


def sweep(tail: str, device: str) -> dict[tuple[str, str, str, str], str]:
    """Each case's outcome for `tail`: "ran" (and equal to the plain forward) or "declined: <reason>"."""
    outcomes = {}
    for case in itertools.product(NORMS, LAYOUTS, MODES, PRECISIONS):
        norm, layout, mode, precision = case
        layer, x, grad = make(norm, layout, mode, precision, device)
        fast, plain = copy.deepcopy(layer), copy.deepcopy(layer)
        fast.tails, plain.tails = (tail,), ()
        ran, got = _run(fast, x, grad, mode, precision, device)
        if ran != tail:
            assert ran == "plain", ran
            outcomes[case] = "declined"
            continue
        _, want = _run(plain, x, grad, mode, precision, device)
        truth = None
        if precision == "bf16-autocast":
            precise = copy.deepcopy(layer).double()
            precise.tails = ()
            _, truth = _run(precise, x.double(), grad.double(), mode, "fp64", device)
        assert got.keys() == want.keys()
        for name in want:
            close(got[name], want[name], TOLERANCE[precision], f"{tail} {case} {name}", truth and truth[name])
        outcomes[case] = "ran"
    return outcomes


def ran(outcomes: dict, **where: str) -> set[tuple[str, ...]]:
    """The cases (norm, layout, mode, precision) that ran, among those matching `where`."""
    keys = ("norm", "layout", "mode", "precision")
    return {c for c, o in outcomes.items() if o == "ran" and all(c[keys.index(k)] == v for k, v in where.items())}
