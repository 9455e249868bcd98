import pytest
import torch

from sknet.layers import select_paths


@pytest.mark.parametrize("m", [1, 2, 3])
def test_select_paths_gradcheck(m):
    paths = [torch.randn(2, 3, 4, 5, dtype=torch.double, requires_grad=True) for _ in range(m)]
    attention = torch.rand(2, m, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, *p: select_paths(p, a), (attention, *paths))


@pytest.mark.parametrize("m", [2, 3])
def test_select_paths_second_order_gradients(m):
    # Hessian-vector products and gradient penalties differentiate the backward itself.
    paths = [torch.randn(2, 3, 2, 3, dtype=torch.double, requires_grad=True) for _ in range(m)]
    attention = torch.rand(2, m, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda a, *p: select_paths(p, a), (attention, *paths))


def test_select_paths_value_and_no_grad_path():
    paths = [torch.randn(2, 3, 4, 4) for _ in range(3)]
    attention = torch.softmax(torch.randn(2, 3, 3), 1)
    expect = sum(attention[:, i, :, None, None] * paths[i] for i in range(3))
    with torch.no_grad():
        torch.testing.assert_close(select_paths(paths, attention), expect)
    torch.testing.assert_close(select_paths(paths, attention), expect)


def test_select_paths_only_attention_requires_grad():
    paths = [torch.randn(2, 3, 4, 4) for _ in range(2)]
    attention = torch.rand(2, 2, 3, requires_grad=True)
    select_paths(paths, attention).sum().backward()
    torch.testing.assert_close(attention.grad, torch.stack([p.sum((2, 3)) for p in paths], 1))
