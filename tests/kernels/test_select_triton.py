"""Parity of the Triton select kernels with PyTorch, on the CPU through Triton's interpreter."""

import textwrap

import pytest
import torch

from sknet.kernels.select_triton import use_triton
from tests.kernels.interpreter import run_interpreted

SCRIPT = textwrap.dedent(
    """
    import torch
    from sknet.kernels.select_triton import select_backward, select_forward

    torch.manual_seed(0)
    for m in (1, 2, 3):
        for channels_last in (False, True):
            for shape in ((2, 5, 3, 7), (1, 40, 6, 6)):
                fmt = torch.channels_last if channels_last else torch.contiguous_format
                paths = tuple(torch.randn(shape).to(memory_format=fmt) for _ in range(m))
                attention = torch.softmax(torch.randn(shape[0], m, shape[1]), 1)
                want = sum(attention[:, i, :, None, None] * paths[i] for i in range(m))
                got = select_forward(paths, attention)
                torch.testing.assert_close(got, want)
                assert got.is_contiguous(memory_format=fmt)
                grad_v = torch.randn(shape).to(memory_format=fmt)
                grad_a, grads = select_backward(grad_v, paths, attention)
                torch.testing.assert_close(grad_a, torch.stack([(grad_v * p).sum((2, 3)) for p in paths], 1))
                for i in range(m):
                    torch.testing.assert_close(grads[i], grad_v * attention[:, i, :, None, None])
    print("parity ok")
    """
)


def _run_interpreted(script: str, marker: str) -> None:
    """Run `script` in a fresh interpreter with TRITON_INTERPRET=1 (kernels on CPU tensors)."""
    run_interpreted(["-c", script], marker)


@pytest.mark.slow
def test_triton_select_kernels_match_pytorch_in_interpreter():
    _run_interpreted(SCRIPT, "parity ok")


def test_kernels_are_used_only_on_cuda():
    paths = (torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3))
    assert not use_triton(paths)


LAYER_SCRIPT = textwrap.dedent(
    """
    import copy, os
    import torch
    from sknet import SKConv2d

    # The select-kernel tail: a read-only hook on the attention makes the fused tail decline in training, and
    # inputs that need a gradient make it decline in evaluation; with the kernels off, the plain/lean tails.
    hook = lambda module, args, out: None

    torch.manual_seed(0)
    for branches in ((3,), (3, 5), (3, 5, 7)):
        for channels_last in (False, True):
            layer = SKConv2d(16, 16, groups=4, branches=branches, min_dim=8).train()
            layer.select.register_forward_hook(hook)
            other = copy.deepcopy(layer)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            x = torch.randn(2, 16, 5, 5).to(memory_format=fmt).requires_grad_(True)
            outs, grads = [], []
            for flag, model in (("1", layer), ("0", other)):
                os.environ["SKNET_FORCE_TRITON"] = flag
                xi = x.detach().clone().requires_grad_(True)
                for training in (True, False):
                    model.train(training)
                    assert (model.tail_for(xi) == "select-kernel") == (flag == "1"), (flag, model.tail_for(xi))
                    out = model(xi)
                    outs.append(out.detach())
                out = model.train()(xi)
                out.backward(torch.ones_like(out))
                grads.append([xi.grad] + [p.grad for p in model.parameters()])
            torch.testing.assert_close(outs[0], outs[2])
            torch.testing.assert_close(outs[1], outs[3])
            for a, b in zip(*grads):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    print("layer ok")
    """
)


@pytest.mark.slow
def test_sk_layer_through_triton_kernels_matches_pytorch_path():
    _run_interpreted(LAYER_SCRIPT, "layer ok")
