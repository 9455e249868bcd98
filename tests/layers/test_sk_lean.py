import copy

import pytest
import torch

from sknet import SKConv2d
from tests.layers.test_sk_conv import _randomise_bn


def _plain(layer: SKConv2d) -> SKConv2d:
    """The layer on its own forward: no fast tail."""
    layer.tails = ()
    return layer


@pytest.mark.parametrize("branches", [(3,), (3, 5), (3, 5, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_training_path_equals_standard_path(branches, channels_last):
    torch.manual_seed(0)
    lean = SKConv2d(16, 32, stride=2, groups=4, branches=branches, min_dim=8).double().train()
    _randomise_bn(lean)
    standard = _plain(copy.deepcopy(lean))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 16, 9, 9, dtype=torch.double).to(memory_format=fmt).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    grad = torch.randn(3, 32, 5, 5, dtype=torch.double)

    assert lean.tail_for(x) == "lean" and standard.tail_for(x) == "plain"
    out = lean(x)
    ref = standard(x2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad(out, [x, *lean.parameters()], grad)
    want = torch.autograd.grad(ref, [x2, *standard.parameters()], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    for a, b in zip(lean.buffers(), standard.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_lean_path_keeps_fewer_tensors_for_backward():
    def saved_bytes(layer, x):
        seen = {}
        params = {p.untyped_storage().data_ptr() for p in layer.parameters()}

        def pack(t):
            if t.untyped_storage().data_ptr() not in params:
                seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            layer(x).sum()
        return sum(seen.values())

    layer = SKConv2d(64, 64).train()
    x = torch.randn(4, 64, 16, 16, requires_grad=True)
    lean = saved_bytes(layer, x)
    standard = saved_bytes(_plain(layer), x)
    feature_map = 4 * 64 * 16 * 16 * 4
    # Standard: input, 2 conv outputs, 2 ReLU outputs. Lean: input and 2 conv outputs.
    assert standard - lean >= 2 * feature_map * 0.99
    assert lean < 3.2 * feature_map


def test_lean_path_not_used_in_eval_no_grad_or_autocast():
    layer = SKConv2d(32, 32, groups=4)
    x = torch.randn(2, 32, 4, 4)
    assert layer.tail_for(x) == "lean"
    with torch.no_grad():
        assert layer.tail_for(x) == "plain"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer.tail_for(x) == "plain"
    layer.eval()
    assert layer.tail_for(x) == "plain"


def test_lean_path_is_the_cpus_alone():
    """On any other device the fused tail runs, or the plain composition where it declines (one rule)."""
    layer = SKConv2d(32, 32, groups=4).to("meta")
    assert layer.tail_for(torch.empty(2, 32, 4, 4, device="meta")) == "plain"


def _grads(layer, x, grad, forward=None):
    layer = copy.deepcopy(layer)
    x = x.detach().clone().requires_grad_(True)
    out = (forward or layer)(layer, x) if forward else layer(x)
    out.backward(grad)
    return out.detach(), [x.grad] + [p.grad for p in layer.parameters()]


def _small_layer():
    torch.manual_seed(1)
    layer = SKConv2d(16, 32, groups=4, min_dim=8).double().train()
    _randomise_bn(layer)
    x = torch.randn(3, 16, 9, 9, dtype=torch.double)
    grad = torch.randn(3, 32, 9, 9, dtype=torch.double)
    return layer, x, grad


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_lean_path_under_activation_checkpointing(use_reentrant):
    from torch.utils.checkpoint import checkpoint

    layer, x, grad = _small_layer()
    out, want = _grads(layer, x, grad)
    got_out, got = _grads(layer, x, grad, lambda m, xi: checkpoint(m, xi, use_reentrant=use_reentrant))
    torch.testing.assert_close(got_out, out, rtol=0, atol=0)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_a_checkpointed_stage_is_recomputed_once_whatever_its_sk_layers():
    """The lean node keeps nothing that torch.utils.checkpoint must recompute for its own backward: a stage of
    three SK layers runs forward twice per step (forward, one recompute), not once more per SK layer."""
    from torch.utils.checkpoint import checkpoint

    torch.manual_seed(0)
    stage = torch.nn.Sequential(*[SKConv2d(8, 8, groups=2, min_dim=4).double() for _ in range(3)]).train()
    calls = []
    for layer in stage:
        layer.register_forward_pre_hook(lambda module, args: calls.append(module))  # on the layer, not its attention
    x = torch.randn(2, 8, 6, 6, dtype=torch.double, requires_grad=True)
    assert all(layer.tail_for(x) == "lean" for layer in stage)
    checkpoint(stage, x, use_reentrant=False).sum().backward()
    assert len(calls) == 2 * len(stage)


def test_lean_path_with_frozen_attention():
    layer, x, grad = _small_layer()
    for p in [*layer.fuse.parameters(), *layer.select.parameters()]:
        p.requires_grad_(False)
    _, got = _grads(layer, x, grad)
    _, want = _grads(_plain(copy.deepcopy(layer)), x, grad)
    # x and the paths still get gradients through the (frozen) attention; the frozen ones get none
    for g, w in zip(got, want, strict=True):
        if w is None:
            assert g is None
        else:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    assert all(p.grad is None for p in [*layer.fuse.parameters(), *layer.select.parameters()])


def test_lean_path_accumulates_into_grad():
    layer, x, grad = _small_layer()
    layer = copy.deepcopy(layer)
    assert layer.tail_for(x) == "lean"
    ((layer(x) * grad).sum() * 2).backward()
    twice = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    layer(x).backward(grad)
    layer(x).backward(grad)
    for g, w in zip((p.grad for p in layer.parameters()), twice, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_hooks_on_the_attention_send_training_to_the_plain_forward_which_records_it():
    """The lean node runs the attention again in backward; a hook (which may replace a, or read it twice)
    makes it decline, and the layer's own forward runs and records the attention once."""
    from sknet.analysis import record_attention

    layer, x, grad = _small_layer()
    with record_attention(layer) as recorder:
        assert layer.tail_for(x) == "plain"
        layer(x).backward(grad)
    assert layer.tail_for(x) == "lean"
    (attention,) = next(iter(recorder.records.values()))
    assert attention.shape == (3, 2, 32)
    torch.testing.assert_close(attention.sum(1), torch.ones(3, 32, dtype=torch.double))


def _hessian_vector_product(layer, x, grad):
    """Gradient of Σ (dL/dθ)² with respect to x and θ, where L = <layer(x), grad> (needs create_graph)."""
    x = x.detach().clone().requires_grad_(True)
    params = list(layer.parameters())
    first = torch.autograd.grad((layer(x) * grad).sum(), [x, *params], create_graph=True)
    return torch.autograd.grad(sum((g * g).sum() for g in first), [x, *params])


def test_lean_path_second_order_gradients_equal_standard_path():
    layer, x, grad = _small_layer()
    lean, standard = copy.deepcopy(layer), _plain(copy.deepcopy(layer))
    assert lean.tail_for(x) == "lean"
    got = _hessian_vector_product(lean, x, grad)
    want = _hessian_vector_product(standard, x, grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)
    # The replay inside backward updates no running statistics.
    for a, b in zip(lean.buffers(), standard.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_lean_path_gradgradcheck():
    torch.manual_seed(2)
    layer = SKConv2d(4, 8, groups=2, min_dim=4).double().train()
    _randomise_bn(layer)
    x = torch.randn(3, 4, 3, 3, dtype=torch.double, requires_grad=True)
    select_weight = layer.select.fc.weight.detach().clone().requires_grad_(True)
    bn_weight = layer.paths[1].bn.weight.detach().clone().requires_grad_(True)

    def forward(xi, w_select, w_bn):
        params = {"select.fc.weight": w_select, "paths.1.bn.weight": w_bn}
        return torch.func.functional_call(layer, params, (xi,), strict=False)

    assert torch.autograd.gradgradcheck(forward, (x, select_weight, bn_weight))


def test_lean_path_backward_twice_with_retained_graph():
    layer, x, grad = _small_layer()
    out = layer(x)
    out.backward(grad, retain_graph=True)
    once = [p.grad.clone() for p in layer.parameters()]
    out.backward(grad)
    for p, g in zip(layer.parameters(), once, strict=True):
        torch.testing.assert_close(p.grad, 2 * g, rtol=1e-12, atol=1e-12)
