"""The fused SK tail (Triton kernels) against tests/reference.py: forward, every gradient, BN running
statistics, evaluation and folded BN; M = 1, 2, 3, strides 1 and 2, NCHW and channels_last; under
torch.compile (fullgraph: the kernels run inside the compiled forward and backward); second-order
gradients, a frozen fuse BN, bf16/fp16 weights.

On CPUs in Triton's interpreter (fp64, fp32, bf16 autocast); on CUDA, where there is one, on the GPU.
The cases themselves are in tests/kernels/sk_tail_parity.py.
"""

import copy
import os
import subprocess
import sys

import pytest
import torch

from sknet import SKConv2d
from tests.kernels.interpreter import ROOT, run_interpreted


def fused_tail_ok(layer, x) -> bool:
    """Whether a call of `layer` on `x` would run the fused CUDA tail (the dispatch's own decision)."""
    return layer.tail_for(x) == "fused"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


CASES = ["float64", "float32", "bfloat16", "compiled", "inductor", "extras", "sweep"]


@pytest.mark.parametrize("case", CASES)
def test_fused_tail_matches_reference_in_interpreter(case):
    run_interpreted(["-m", "tests.kernels.sk_tail_parity", "cpu", case], "parity ok")


@needs_cuda
@pytest.mark.parametrize("case", CASES)
def test_fused_tail_matches_reference_on_cuda(case):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "SKNET_FORCE_TRITON")}
    env["NVIDIA_TF32_OVERRIDE"] = "0"  # fp32 means fp32 here: no TF32 in the reference's convolutions
    result = subprocess.run(
        [sys.executable, "-m", "tests.kernels.sk_tail_parity", "cuda", case],
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        cwd=ROOT,
    )
    assert result.returncode == 0 and "parity ok" in result.stdout, result.stderr[-3000:]


def test_the_fused_tail_is_chosen_only_where_its_kernels_run(monkeypatch):
    layer = SKConv2d(16, 16, groups=4, min_dim=8).train()
    x = torch.randn(2, 16, 5, 5)
    monkeypatch.delenv("SKNET_FORCE_TRITON", raising=False)
    assert not fused_tail_ok(layer, x)  # CPU tensors: the lean CPU path
    monkeypatch.setenv("SKNET_FORCE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fused_tail_ok(layer, x)
    assert not fused_tail_ok(SKConv2d(16, 16, groups=4, branches=(3, 5, 7, 9), min_dim=8).train(), x)  # M > 3
    assert not fused_tail_ok(SKConv2d(16, 16, groups=4, aggregation="sum"), x)
    layer.paths[0].bn.eval()  # one path on batch statistics, one on a fixed map: the paths differ in kind
    assert not fused_tail_ok(layer, x)
    layer.eval()
    with torch.no_grad():
        assert fused_tail_ok(layer, x)
    assert fused_tail_ok(layer, x.requires_grad_(True))  # a gradient through an eval layer: fixed maps
    assert fused_tail_ok(SKConv2d(16, 16, groups=4, min_dim=8, norm_layer="frozen").train(), x)
    assert not fused_tail_ok(SKConv2d(16, 16, groups=4, min_dim=8, norm_layer="groupnorm").train(), x)
    layer.tails = ()
    assert not fused_tail_ok(layer.train(), x.detach())


def test_training_needs_the_librarys_own_attention(monkeypatch):
    """Backward states the attention's derivative in closed form: anything else with a gradient takes the plain
    path."""
    monkeypatch.setenv("SKNET_FORCE_TRITON", "1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x = torch.randn(2, 16, 5, 5)

    def layer():
        return SKConv2d(16, 16, groups=4, min_dim=8).train()

    assert fused_tail_ok(layer(), x)
    changed = layer()
    changed.fuse.act = torch.nn.GELU()
    assert not fused_tail_ok(changed, x)
    changed = layer()
    changed.select.fc = torch.nn.Conv2d(8, 32, 1)  # with a bias
    assert not fused_tail_ok(changed, x)
    hooked = layer()
    handle = hooked.select.register_forward_hook(lambda module, args, out: out * 2)
    assert not fused_tail_ok(hooked, x)
    with torch.no_grad():  # evaluation has no backward to state: hooks are fine
        assert fused_tail_ok(hooked.eval(), x)
    handle.remove()
    assert fused_tail_ok(hooked.train(), x)
    handle = hooked.fuse.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
    assert not fused_tail_ok(hooked, x)
    handle.remove()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda module, args, out: None)
    try:
        assert not fused_tail_ok(hooked, x)
    finally:
        handle.remove()
    assert fused_tail_ok(hooked, x)


@needs_cuda
def test_fused_tail_under_autocast_and_compile_on_cuda():
    """Eager autocast takes the fused tail; torch.compile traces the layer without graph breaks."""
    layer = SKConv2d(64, 64, groups=8).cuda().train().to(memory_format=torch.channels_last)
    x = torch.randn(8, 64, 14, 14, device="cuda").to(memory_format=torch.channels_last)
    assert fused_tail_ok(layer, x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        layer(x).float().square().mean().backward()
    # No host-device synchronisation in the layer's forward and backward (after a warm-up that compiles
    # the kernels): what lets the training step run ahead of the GPU and CUDA graphs capture it.
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = layer(x)
        out.float().square().mean().backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    compiled = torch.compile(layer, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        compiled(x).float().square().mean().backward()
    # CUDA graphs (reduce-overhead): the same values as eager, step after step. In fp32: in bf16 the fuse
    # step's weight gradient alone differs by ~10% between any two orders of summation (plain path too).
    graphed, eager = copy.deepcopy(layer), copy.deepcopy(layer)
    graphed_step = torch.compile(graphed, mode="reduce-overhead", fullgraph=True)

    def close(got, want, what):
        error = (got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-12)
        assert error < 5e-2, f"{what}: relative error {error:.3g}"

    for _ in range(3):
        # A training step's boundary, as `sknet train` marks it: the graphs' outputs of the step before may
        # be overwritten from here on (without the mark, cudagraph trees guess the boundary).
        torch.compiler.cudagraph_mark_step_begin()
        got, want = graphed_step(x), eager(x)
        close(got, want, "V")
        got.square().mean().backward()
        want.square().mean().backward()
    for (name, p), q in zip(graphed.named_parameters(), eager.parameters(), strict=True):
        close(p.grad, q.grad, f"dL/d{name}")
    for (name, a), b in zip(graphed.named_buffers(), eager.buffers(), strict=True):
        close(a.float(), b.float(), name)
