"""Parity of the fused SK tail (sknet.layers.sk_tails.fused on Triton kernels) with tests/reference.py.

Run as a script, in a process of its own: on CPUs with TRITON_INTERPRET=1 SKNET_FORCE_TRITON=1 (the
kernels in Triton's interpreter), on CUDA as it is. Prints "parity ok" when every case holds.
Usage: python -m tests.kernels.sk_tail_parity DEVICE DTYPE  (DTYPE: float64, float32 or bfloat16)
       python -m tests.kernels.sk_tail_parity DEVICE compiled|inductor  (torch.compile, fullgraph, with
           the aot_eager or inductor backend: the kernels run inside the compiled graphs)
       python -m tests.kernels.sk_tail_parity DEVICE extras    (second order, frozen fuse BN, bf16 weights)
       python -m tests.kernels.sk_tail_parity DEVICE sweep     (every SK option, tests/layers/tail_sweep.py)
"""

from __future__ import annotations

import copy
import sys

import torch

from sknet import SKConv2d
from sknet.bn_folding import fuse_for_inference
from tests.reference import reference_sk_conv


def fused_tail_ok(layer, x) -> bool:
    """Whether a call of `layer` on `x` would run the fused CUDA tail (the dispatch's own decision)."""
    return layer.tail_for(x) == "fused"


# fp64: the kernels accumulate in fp64, so the equations must agree to rounding. fp32: both sides sum in
# different orders over N·H·W (the CPU lean path differs from the reference by up to 8e-6 alike), so
# gradients are compared relative to their largest entry.
TOLERANCE = {torch.float64: 1e-9, torch.float32: 5e-5, torch.bfloat16: 3e-2}


def close(got: torch.Tensor, want: torch.Tensor, tol: float, what: str) -> None:
    scale = max(want.abs().max().item(), 1.0)
    error = (got.double() - want.double()).abs().max().item()
    assert error <= tol * scale, f"{what}: max error {error:.3g} > {tol:.1g}·{scale:.3g}"


def check_training(
    device: str, dtype: torch.dtype, branches, stride: int, channels_last: bool, momentum, shape=(3, 9, 7)
) -> None:
    tol = TOLERANCE[dtype]
    param_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    layer = SKConv2d(16, 24, stride=stride, groups=4, branches=branches, min_dim=8).to(device, param_dtype)
    for path in layer.paths:
        path.bn.momentum = momentum
    ref = copy.deepcopy(layer)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    n, h, w = shape
    x = torch.randn(n, 16, h, w, device=device, dtype=param_dtype).to(memory_format=fmt)
    grad = torch.randn(n, 24, (h - 1) // stride + 1, (w - 1) // stride + 1, device=device, dtype=param_dtype)
    xf, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    assert fused_tail_ok(layer.train(), xf)
    if dtype == torch.bfloat16:
        check_autocast(device, layer, ref, xf, xr, grad)
    else:
        out = layer(xf)
        want, _ = reference_sk_conv(ref.train(), xr, training=True)
        # The tail keeps the format the convolutions give: the input's, except where PyTorch's own convolution
        # does not keep it (cuDNN has no channels_last float64: those outputs are contiguous).
        with torch.no_grad():
            conv_format = suggest_format(layer.paths[0].conv(x))
        assert out.is_contiguous(memory_format=conv_format), "the output keeps the convolutions' memory format"
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
    ops under autocast (the layer's own forward, no tail) are, up to bf16 rounding."""
    plain = without_tails(copy.deepcopy(layer))
    xp = xr.detach().clone().requires_grad_(True)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = layer(xf)
        out_plain = plain(xp)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=suggest_format(xf))
    want, _ = reference_sk_conv(ref.train(), xr, training=True)
    out.backward(grad.to(out.dtype))
    out_plain.backward(grad.to(out_plain.dtype))
    want.backward(grad)
    as_close_as_plain((out, out_plain, want), (xf, xp, xr), (layer, plain, ref), "bf16 autocast")


def as_close_as_plain(outputs, inputs, layers, what: str) -> None:
    """The fused tail's V and gradients (first of each triple) are as close to the precise reference (third)
    as the plain composition in the same precision (second) is, up to bf16 rounding."""
    pairs = [("V", *outputs), ("dL/dx", *(x.grad for x in inputs))]
    fused, plain, ref = layers
    for (name, p), pp, q in zip(fused.named_parameters(), plain.parameters(), ref.parameters(), strict=True):
        pairs.append((f"dL/d{name}", p.grad, pp.grad, q.grad))
    for name, got, baseline, want in pairs:
        error = (got.double() - want.double()).abs().max().item()
        plain_error = (baseline.double() - want.double()).abs().max().item()
        scale = max(want.abs().max().item(), 1.0)
        assert error <= 2 * plain_error + TOLERANCE[torch.bfloat16] * scale, (
            f"{what}, {name}: fused error {error:.3g}, plain {plain_error:.3g}, scale {scale:.3g}"
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


def without_tails(layer: SKConv2d) -> SKConv2d:
    """The layer on its own forward (the reference composition): no fast tail."""
    layer.tails = ()
    return layer


def training_case(device: str, dtype: torch.dtype, branches=(3, 5), stride: int = 2, channels_last: bool = True):
    torch.manual_seed(1)
    layer = SKConv2d(16, 24, stride=stride, groups=4, branches=branches, min_dim=8).to(device, dtype).train()
    with torch.no_grad():  # BN away from its identity initialisation, so that γ and β matter
        for bn in [path.bn for path in layer.paths] + [layer.fuse.bn]:
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(4, 16, 9, 7, device=device, dtype=dtype).to(memory_format=fmt)
    h, w = (9 - 1) // stride + 1, (7 - 1) // stride + 1
    return layer, x, torch.randn(4, 24, h, w, device=device, dtype=dtype)


class _Counting:
    """Stands in for a Triton kernel in sknet.kernels.sk_tail_triton and notes its launches."""

    def __init__(self, kernel, name: str, seen: set[str]) -> None:
        self.kernel, self.name, self.seen = kernel, name, seen

    def __getitem__(self, grid):
        self.seen.add(self.name)
        return self.kernel[grid]


def kernels_launched(fn) -> set[str]:
    """The fused-tail kernels launched (forward and backward) while fn() ran, compiled graphs included."""
    from sknet.kernels import sk_tail_triton as kernels

    names = ["_stats_kernel", "_pool_kernel", "_select_kernel", "_bwd_reduce_kernel", "_bwd_apply_kernel"]
    originals = {name: getattr(kernels, name) for name in names}
    seen: set[str] = set()
    try:
        for name, kernel in originals.items():
            setattr(kernels, name, _Counting(kernel, name.strip("_").removesuffix("_kernel"), seen))
        fn()
    finally:
        for name, kernel in originals.items():
            setattr(kernels, name, kernel)
    return seen


def check_compiled(device: str, backend: str) -> None:
    """torch.compile(fullgraph=True) traces the fused tail (its kernels run in the compiled graph, forward
    and backward) and matches the reference: V, every gradient, running statistics, then evaluation.
    aot_eager covers M = 1, 2, 3; inductor (slow to build) one case: its lowering does not depend on M."""
    dtype = torch.float64 if device == "cpu" else torch.float32
    tol = TOLERANCE[dtype]
    cases = (((3,), False), ((3, 5), True), ((3, 5, 7), False))
    if backend == "inductor":
        cases = cases[1:2]
    for branches, channels_last in cases:
        torch._dynamo.reset()
        layer, x, grad = training_case(device, dtype, branches, 2, channels_last)
        ref = copy.deepcopy(layer)
        compiled = torch.compile(layer, fullgraph=True, backend=backend)
        xf, xr = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        state = {}

        def step(compiled=compiled, xf=xf, grad=grad, state=state):
            state["out"] = out = compiled(xf)
            out.backward(grad)

        ran = kernels_launched(step)
        assert ran == {"stats", "pool", "select", "bwd_reduce", "bwd_apply"}, f"kernels in the compiled step: {ran}"
        want, _ = reference_sk_conv(ref, xr, training=True)
        want.backward(grad)
        close(state["out"], want, tol, "compiled V")
        close(xf.grad, xr.grad, tol, "compiled dL/dx")
        for (name, p), q in zip(layer.named_parameters(), ref.parameters(), strict=True):
            close(p.grad, q.grad, tol, f"compiled dL/d{name}")
        eager = copy.deepcopy(ref)  # the running statistics of the same step taken eagerly
        eager(x)
        for a, b in zip(layer.buffers(), eager.buffers(), strict=True):
            close(a, b, tol, "compiled running statistics")
        layer.eval()
        with torch.no_grad():
            compiled = torch.compile(layer, fullgraph=True, backend=backend)
            ran = kernels_launched(lambda compiled=compiled, x=x, state=state: state.update(out=compiled(x)))
            assert ran == {"pool", "select"}, f"kernels in the compiled evaluation: {ran}"
            want, _ = reference_sk_conv(ref_copy_stats(ref, layer).eval(), x, training=False)
            close(state["out"], want, tol, "compiled V (eval)")
    if backend == "aot_eager":
        check_compiled_model(device, dtype, tol)


def check_compiled_model(device: str, dtype: torch.dtype, tol: float) -> None:
    """A whole SK network's training step compiles as one graph with the kernels in it, and matches eager."""
    from sknet.models import create_model

    torch._dynamo.reset()
    torch.manual_seed(3)
    model = create_model("sknet_tiny").to(device, dtype).train()
    eager = copy.deepcopy(model)
    x = torch.randn(4, 1, 28, 28, device=device, dtype=dtype)
    y = torch.randint(0, 10, (4,), device=device)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    ran = kernels_launched(lambda: torch.nn.functional.cross_entropy(compiled(x), y).backward())
    assert ran == {"stats", "pool", "select", "bwd_reduce", "bwd_apply"}, f"kernels in the compiled model: {ran}"
    torch.nn.functional.cross_entropy(eager(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
        close(p.grad, q.grad, tol, f"compiled model dL/d{name}")
    for (name, a), b in zip(model.named_buffers(), eager.buffers(), strict=True):
        close(a, b, tol, f"compiled model {name}")


def hessian_vector_product(layer, x, grad):
    """Gradient of Σ (dL/dθ)² with respect to x and θ, where L = <layer(x), grad> (needs create_graph)."""
    x = x.detach().clone().requires_grad_(True)
    params = list(layer.parameters())
    first = torch.autograd.grad((layer(x) * grad).sum(), [x, *params], create_graph=True)
    return torch.autograd.grad(sum((g * g).sum() for g in first), [x, *params])


def check_split_reaches_every_tail(device: str) -> None:
    """A changed Split (every path convolution's output doubled, i.e. the same layer with its convolution
    weights doubled) reaches the fused tail, and the layer's own forward."""

    class Doubled(torch.nn.Module):
        def __init__(self, conv):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return 2 * self.conv(x)

    for tail in ("fused", "plain"):
        layer, x, grad = training_case(device, torch.float64)
        changed = copy.deepcopy(layer)
        for path in changed.paths:
            path.conv = Doubled(path.conv)
        if tail == "plain":
            without_tails(changed)
        with torch.no_grad():
            for path in layer.paths:
                path.conv.weight.mul_(2)
        assert changed.tail_for(x) == tail, (changed.tail_for(x), tail)
        xg, xw = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        out = changed(xg)
        ref, _ = reference_sk_conv(layer, xw, training=True)
        close(out, ref, TOLERANCE[torch.float64], f"V ({tail} tail, changed Split)")
        out.backward(grad)
        ref.backward(grad)
        close(xg.grad, xw.grad, TOLERANCE[torch.float64], f"dL/dx ({tail} tail, changed Split)")


def check_extras(device: str) -> None:
    check_saved_for_backward(device)
    check_split_reaches_every_tail(device)
    # Second-order gradients (create_graph=True) replay the plain composition: equal to the plain path's.
    layer, x, grad = training_case(device, torch.float64)
    plain = without_tails(copy.deepcopy(layer))
    assert fused_tail_ok(layer, x)
    got = hessian_vector_product(layer, x, grad)
    want = hessian_vector_product(plain, x, grad)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-9, "second-order gradient")
    for a, b in zip(layer.buffers(), plain.buffers(), strict=True):
        close(a, b, 1e-9, "buffers after a second-order step")  # the replays update no running statistics

    # Backward passes through a retained graph: one asking for the attention weights only, then two full ones;
    # then a second-order pass on a fresh graph.
    layer, x, grad = training_case(device, torch.float64)
    plain = without_tails(copy.deepcopy(layer))
    for model in (layer, plain):
        xx = x.clone().requires_grad_(True)
        loss = (model(xx) * grad).sum()
        torch.autograd.grad(loss, [model.select.fc.weight], retain_graph=True)
        loss.backward(retain_graph=True)
        loss.backward()
        model.x_grad = xx.grad
    close(layer.x_grad, plain.x_grad, 1e-9, "dL/dx, retained graph")
    for (name, p), q in zip(layer.named_parameters(), plain.parameters(), strict=True):
        close(p.grad, q.grad, 1e-9, f"dL/d{name}, retained graph")
    got = hessian_vector_product(layer, x, grad)
    want = hessian_vector_product(plain, x, grad)
    for g, w in zip(got, want, strict=True):
        close(g, w, 1e-9, "second-order gradient after retained-graph passes")

    # A frozen fuse BN (running statistics) in a training layer: dL/ds through the frozen normalisation.
    layer, x, grad = training_case(device, torch.float64)
    with torch.no_grad():
        layer.fuse.bn.running_mean.uniform_(-0.2, 0.2), layer.fuse.bn.running_var.uniform_(0.5, 2.0)
    layer.fuse.bn.eval()
    plain = without_tails(copy.deepcopy(layer))
    assert fused_tail_ok(layer, x)
    compare_with_plain(layer, plain, x, grad, 1e-9)

    # A read-only forward hook on select still sees the attention; in training the plain path runs then.
    seen = []
    handle = layer.select.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    assert not fused_tail_ok(layer, x)
    handle.remove()
    layer.eval()
    with torch.no_grad():
        handle = layer.select.register_forward_hook(lambda module, args, out: seen.append(out.shape))
        assert fused_tail_ok(layer, x)
        layer(x)
    assert seen == [(4, 2, 24)]

    # Parameters in bf16 and fp16 (no autocast): as close to the fp64 plain path as the plain path in that dtype.
    for dtype in (torch.bfloat16, torch.float16):
        layer, x, grad = training_case(device, torch.float64)
        low, plain_low = copy.deepcopy(layer).to(dtype), without_tails(copy.deepcopy(layer).to(dtype))
        assert fused_tail_ok(low, x.to(dtype))
        xs = [x.clone().requires_grad_(True) for _ in range(2)] + [x.to(dtype).requires_grad_(True) for _ in range(2)]
        want = layer(xs[0])
        want.backward(grad)
        out = low(xs[2])
        out.backward(grad.to(dtype))
        out_plain = plain_low(xs[3])
        out_plain.backward(grad.to(dtype))
        assert out.dtype == dtype
        as_close_as_plain((out, out_plain, want), (xs[2], xs[3], xs[0]), (low, plain_low, layer), f"{dtype} weights")


def check_saved_for_backward(device: str) -> None:
    """Training keeps, of everything the size of a feature map, only x (for the convolutions) and the path
    conv outputs c_m: u_m, the sum of the paths and V are never kept (the plain path keeps u_m too)."""
    for branches in ((3,), (3, 5), (3, 5, 7)):
        layer, x, _ = training_case(device, torch.float32, branches, stride=1)
        x.requires_grad_(True)
        params = {p.untyped_storage().data_ptr() for p in layer.parameters()}
        seen: dict[int, int] = {}

        def pack(t, seen=seen, params=params):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x)
        # The smallest feature map here is x (N·16·63 values); the N·C-sized tensors are far smaller.
        maps = [b for b in seen.values() if b >= x.numel() * x.element_size() // 2]
        assert len(maps) == 1 + len(branches), f"{len(maps)} feature maps kept for M = {len(branches)}"


def compare_with_plain(layer, plain, x, grad, tol: float) -> None:
    xf, xp = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out = layer(xf)
    out.backward(grad)
    want = plain(xp)
    want.backward(grad)
    close(out, want, tol, "V")
    close(xf.grad, xp.grad, tol, "dL/dx")
    for (name, p), q in zip(layer.named_parameters(), plain.parameters(), strict=True):
        close(p.grad, q.grad, tol, f"dL/d{name}")
    for a, b in zip(layer.buffers(), plain.buffers(), strict=True):
        close(a, b, tol, "running statistics")


def check_sweep(device: str) -> None:
    """Every SK option × mode × precision: the fused tail equals the layer's own forward or declines
    (tests/layers/tail_sweep.py), and runs where it is meant to."""
    from tests.layers import tail_sweep

    outcomes = tail_sweep.sweep("fused", device)
    ran = tail_sweep.ran(outcomes)
    # Fixed-map norms in any mode; batch statistics in training, and evaluation-mode BatchNorm / SyncBatchNorm
    # as fixed maps; never GroupNorm, more than 3 paths or the plain sum; SyncBatchNorm in training neither.
    for norm in ("batchnorm", "frozen"):
        for layout in ("M1", "M2", "M3"):
            for mode in tail_sweep.MODES:
                for precision in tail_sweep.PRECISIONS:
                    assert (norm, layout, mode, precision) in ran, (norm, layout, mode, precision, "did not run")
    assert not tail_sweep.ran(outcomes, norm="groupnorm")
    assert not tail_sweep.ran(outcomes, layout="M4") and not tail_sweep.ran(outcomes, layout="sum")
    assert tail_sweep.ran(outcomes, norm="syncbn") == {
        case for case in outcomes if case[0] == "syncbn" and case[1] in ("M1", "M2", "M3") and case[2] != "train"
    }


def main() -> None:
    device, what = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    if what in ("compiled", "inductor"):
        check_compiled(device, "aot_eager" if what == "compiled" else "inductor")
    elif what == "extras":
        check_extras(device)
    elif what == "sweep":
        check_sweep(device)
    if what in ("compiled", "inductor", "extras", "sweep"):
        print("parity ok")
        return
    dtype = getattr(torch, what)
    for branches in ((3,), (3, 5), (3, 5, 7)):
        for stride in (1, 2):
            for channels_last in (False, True):
                check_training(device, dtype, branches, stride, channels_last, momentum=0.1)
    check_training(device, dtype, (3, 5), 1, True, momentum=None)  # cumulative average: 1/t on the device
    # Maps large enough for the H×W reductions to run in several chunks (the last one shorter), in fp64,
    # where the chunks' combination must be exact to rounding. (In fp32, sums over maps this size differ
    # from an fp64 reference by ~1e-4 of the largest gradient for PyTorch's own path as for the kernels;
    # on CPUs, oneDNN's bf16 weight gradient of a dilated grouped conv on such maps is itself far off.)
    for channels_last in (False, True) if dtype == torch.float64 else ():
        check_training(device, dtype, (3, 5), 1, channels_last, momentum=0.1, shape=(3, 36, 36))
    print("parity ok")


if __name__ == "__main__":
    main()
