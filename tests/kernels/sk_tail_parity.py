"""Parity of the fused SK tail (sknet.layers.sk_fused on Triton kernels) with tests/reference.py.

Run as a script, in a process of its own: on CPUs with TRITON_INTERPRET=1 SKNET_FORCE_TRITON=1 (the
kernels in Triton's interpreter), on CUDA as it is. Prints "parity ok" when every case holds.
Usage: python -m tests.kernels.sk_tail_parity DEVICE DTYPE  (DTYPE: float64, float32 or bfloat16)
"""

from __future__ import annotations

import copy
import os
import sys

import torch

from sknet import SKConv2d
from sknet.bn_folding import fuse_for_inference
from sknet.layers.sk_fused import fused_tail_ok
from tests.reference import reference_sk_conv

# fp64: the kernels accumulate in fp64, so the equations must agree to rounding. fp32: both sides sum in
# different orders over N·H·W (the CPU lean path differs from the reference by up to 8e-6 alike), so
# gradients are compared relative to their largest entry.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 5e-5, torch.bfloat16: 3e-2}


def close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    scale = max(want.abs().max().item(), 1.0)
    error = (got.double() - want.double()).abs().max().item()
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:.1g}·{scale:.3g}"


def check_training(device: str, dtype: torch.dtype, branches, stride: int, channels_last: bool, momentum) -> None:
    tol = TOLERANCE[dtype]
    param_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    layer = SKConv2d(16, 24, stride=stride, groups=4, branches=branches, min_dim=8).to(device, param_dtype)
    for path in layer.paths:
        path.bn.momentum = momentum
    ref = copy.deepcopy(layer)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 16, 9, 7, device=device, dtype=param_dtype).to(memory_format=fmt)
    grad = torch.randn(3, 24, (9 - 1) // stride + 1, (7 - 1) // stride + 1, device=device, dtype=param_dtype)
    xf, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert fused_tail_ok(layer.train(), xf)
    if dtype == torch.bfloat16:
        check_autocast(device, layer, ref, xf, xr, grad)
    else:
        out = layer(xf)
        want, _ = reference_sk_conv(ref.train(), xr, training=True)
        assert out.is_contiguous(memory_format=fmt), "the output keeps the input's memory format"
        close(out, want, tol, "V")
        out.backward(grad.to(out.dtype))
        want.backward(grad)
        close(xf.grad, xr.grad, tol, "dL/dx")
        for (name, p), q in zip(layer.named_parameters(), ref.parameters(), strict=True):
            close(p.grad, q.grad, tol, f"dL/d{name}")
    # Running statistics: the reference's F.batch_norm updates copies, so compute what BN would hold.
    for path, ref_path in zip(layer.paths, ref.paths, strict=True):
        conv = ref_path.conv
        c = torch.nn.functional.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        bn = copy.deepcopy(ref_path.bn)
        bn(c)
        close(path.bn.running_mean, bn.running_mean, tol, "running_mean")
        close(path.bn.running_var, bn.running_var, tol, "running_var")
        assert int(path.bn.num_batches_tracked) == int(bn.num_batches_tracked)
    # Evaluation (running statistics), then with BN folded into the convolutions.
    layer.eval()
    with torch.no_grad():
        assert fused_tail_ok(layer, x)
        want, _ = reference_sk_conv(ref_copy_stats(ref, layer).eval(), x, training=False)
        close(layer(x), want, tol, "V (eval)")
        if dtype != torch.bfloat16:
            fuse_for_inference(layer)
            assert fused_tail_ok(layer, x)
            close(layer(x), want, max(tol, 1e-5), "V (eval, BN folded)")


def check_autocast(device, layer, ref, xf, xr, grad) -> None:
    """bf16 autocast (how GPUs train): the fused tail is as close to the fp32 reference as PyTorch's own
    ops under autocast (the plain composition, SKNET_FUSED=0) are, up to bf16 rounding."""
    plain = copy.deepcopy(layer)
    xp = xr.detach().clone().requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = layer(xf)
        os.environ["SKNET_FUSED"] = "0"
        try:
            out_plain = plain(xp)
        finally:
            del os.environ["SKNET_FUSED"]
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=suggest_format(xf))
    want, _ = reference_sk_conv(ref.train(), xr, training=True)
    out.backward(grad.to(out.dtype))
    out_plain.backward(grad.to(out_plain.dtype))
    want.backward(grad)
    pairs = [("V", out, out_plain, want), ("dL/dx", xf.grad, xp.grad, xr.grad)]
    for (name, p), pp, q in zip(layer.named_parameters(), plain.parameters(), ref.parameters(), strict=True):
        pairs.append((f"dL/d{name}", p.grad, pp.grad, q.grad))
    for what, got, baseline, want in pairs:
        error = (got.double() - want.double()).abs().max().item()
        plain_error = (baseline.double() - want.double()).abs().max().item()
        scale = max(want.abs().max().item(), 1.0)
        assert error <= 2 * plain_error + TOLERANCE[torch.bfloat16] * scale, (
            f"{what}: fused error {error:.3g}, plain autocast {plain_error:.3g}, scale {scale:.3g}"
        )


def suggest_format(x: torch.Tensor):
    return (
        torch.channels_last
        if x.is_contiguous(memory_format=torch.channels_last) and x.stride(1) == 1
        else (torch.contiguous_format)
    )


def ref_copy_stats(ref: SKConv2d, layer: SKConv2d) -> SKConv2d:
    ref = copy.deepcopy(ref)
    ref.load_state_dict(layer.state_dict())
    return ref


def main() -> None:
    device, dtype = sys.argv[1], getattr(torch, sys.argv[2])
    torch.manual_seed(0)
    for branches in ((3,), (3, 5), (3, 5, 7)):
        for stride in (1, 2):
            for channels_last in (False, True):
                check_training(device, dtype, branches, stride, channels_last, momentum=0.1)
    check_training(device, dtype, (3, 5), 1, True, momentum=None)  # cumulative average: 1/t on the device
    print("parity ok")


if __name__ == "__main__":
    main()
