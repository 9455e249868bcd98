import pytest
import torch

from sknet.layers import weighted_sum


@pytest.mark.parametrize("m", [1, 2, 3])
def test_weighted_sum_gradcheck(m):
    paths = [torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True) for _ in range(m)]
    attention = torch.rand(2, m, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, *p: weighted_sum(p, a), (attention, *paths))


@pytest.mark.parametrize("m", [2, 3])
def test_weighted_sum_second_order_gradients(m):
    # Hessian-vector products and gradient penalties differentiate the backward itself.
    paths = [torch.randn(2, 3, 2, 3, dtype=torch.double, requires_grad=True) for _ in range(m)]
    attention = torch.rand(2, m, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, *p: weighted_sum(p, a), (attention, *paths))


def test_weighted_sum_value_and_no_grad_path():
    paths = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    attention = torch.softmax(torch.randn(2, 3, 3), 1)
    expect = sum(attention[:, i, :, None, None] * paths[i] for i in range(3))
    with torch.no_grad():
        torch.testing.assert_close(weighted_sum(paths, attention), expect)
    torch.testing.assert_close(weighted_sum(paths, attention), expect)


def test_weighted_sum_only_attention_requires_grad():
    paths = [torch.randn(2, 3, 4, 4) for _ in range(2)]
    attention = torch.rand(2, 2, 3, requires_grad=True)
    weighted_sum(paths, attention).sum().backward()
    torch.testing.assert_close(attention.grad, torch.stack([p.sum((2, 3)) for p in paths], 1))


@pytest.mark.parametrize("m", [1, 2, 3])
@pytest.mark.parametrize("grad", [True, False])
def test_weighted_sum_fp32_attention_on_bf16_paths(m, grad):
    # CUDA autocast: the paths come out of the convolutions in bf16, softmax runs in fp32 (autocast's fp32
    # list). V takes the paths' dtype, as the fused tail's does; dL/da arrives in fp32. (torch.lerp refused
    # the mix: the plain tail failed under autocast on a GPU.)
    paths = [torch.randn(2, 3, 4, 4, dtype=torch.bfloat16, requires_grad=grad) for _ in range(m)]
    attention = torch.softmax(torch.randn(2, m, 3), 1).requires_grad_(grad)
    v = weighted_sum(paths, attention, sums_to_one=True)
    assert v.dtype == torch.bfloat16
    expect = sum(attention[:, i, :, None, None].detach() * paths[i].detach().float() for i in range(m))
    torch.testing.assert_close(v.float(), expect, atol=2e-2, rtol=2e-2)
    if grad:
        v.float().square().sum().backward()
        assert attention.grad.dtype == torch.float32 and paths[0].grad.dtype == torch.bfloat16
