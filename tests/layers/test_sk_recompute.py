import copy

import pytest
import torch

from sknet import SKConv2d
from sknet.layers import sk_conv
from tests.layers.test_sk_conv import _randomise_bn


def _standard(monkeypatch):
    monkeypatch.setattr(sk_conv, "lean_path_ok", lambda paths, x: False)


@pytest.mark.parametrize("branches", [(3,), (3, 5), (3, 5, 7)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lean_training_path_equals_standard_path(monkeypatch, branches, channels_last):
    torch.manual_seed(0)
    lean = SKConv2d(16, 32, stride=2, groups=4, branches=branches, min_dim=8).double().train()
    _randomise_bn(lean)
    standard = copy.deepcopy(lean)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(3, 16, 9, 9, dtype=torch.double).to(memory_format=fmt).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    grad = torch.randn(3, 32, 5, 5, dtype=torch.double)

    out = lean(x)
    with monkeypatch.context() as m:
        _standard(m)
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


def test_lean_path_keeps_fewer_tensors_for_backward(monkeypatch):
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
    with monkeypatch.context() as m:
        _standard(m)
        standard = saved_bytes(layer, x)
    feature_map = 4 * 64 * 16 * 16 * 4
    # Standard: input, 2 conv outputs, 2 ReLU outputs. Lean: input and 2 conv outputs.
    assert standard - lean >= 2 * feature_map * 0.99
    assert lean < 3.2 * feature_map


def test_lean_path_not_used_in_eval_no_grad_or_autocast():
    from sknet.layers.sk_recompute import lean_path_ok

    layer = SKConv2d(32, 32, groups=4)
    x = torch.randn(2, 32, 4, 4)
    assert lean_path_ok(layer.paths, x)
    with torch.no_grad():
        assert not lean_path_ok(layer.paths, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lean_path_ok(layer.paths, x)
    layer.eval()
    assert not lean_path_ok(layer.paths, x)
