import pytest
import torch

from sknet import Aggregation, Branch, ConfigError, InputShapeError, SKConv2d, parse_branches
from sknet.layers import attention_dim
from tests.reference import reference_sk_conv


def _randomise_bn(module: torch.nn.Module) -> None:
    """Non-trivial BN statistics and affine parameters, so eval-mode parity means something."""
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


def _capture_attention(layer: SKConv2d):
    store = {}
    handle = layer.select.register_forward_hook(lambda mod, inp, out: store.__setitem__("a", out))
    return store, handle


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("size", [1, 7, 8, 15])
def test_output_shape(stride, size):
    layer = SKConv2d(32, 64, stride=stride, groups=8, branches=(3, 5, 7)).eval()
    out = layer(torch.randn(2, 32, size, size + 1))
    expect = ((size - 1) // stride + 1, size // stride + 1)
    assert out.shape == (2, 64, *expect)


@pytest.mark.parametrize("branches", [(3,), (3, 5), (3, 5, 7)])
@pytest.mark.parametrize("training", [False, True])
def test_matches_reference_forward_and_gradients(branches, training):
    torch.manual_seed(1)
    layer = SKConv2d(32, 32, stride=2, groups=4, branches=branches, min_dim=8).double()
    _randomise_bn(layer)
    layer.train(training)
    x = torch.randn(3, 32, 9, 9, dtype=torch.double, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)

    store, handle = _capture_attention(layer)
    out = layer(x)
    handle.remove()
    ref, ref_attention = reference_sk_conv(layer, x_ref, training)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(store["a"], ref_attention, rtol=1e-10, atol=1e-10)

    grad = torch.randn_like(out)
    params = [p for p in layer.parameters()]
    got = torch.autograd.grad(out, [x, *params], grad)
    want = torch.autograd.grad(ref, [x_ref, *params], grad, allow_unused=True)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, torch.zeros_like(g) if w is None else w, rtol=1e-9, atol=1e-10)


def test_attention_sums_to_one_and_has_shape_n_m_c():
    layer = SKConv2d(64, 64, branches=(3, 5, 7)).eval()
    store, handle = _capture_attention(layer)
    layer(torch.randn(4, 64, 8, 8))
    handle.remove()
    a = store["a"]
    assert a.shape == (4, 3, 64)
    torch.testing.assert_close(a.sum(1), torch.ones(4, 64))
    assert (a > 0).all()


def test_plain_sum_has_no_attention_and_sums_paths():
    layer = SKConv2d(32, 32, groups=4, aggregation="sum").eval()
    assert layer.select is None and layer.fuse is None
    sk = SKConv2d(32, 32, groups=4)
    n_sk = sum(p.numel() for p in sk.parameters())
    n_sum = sum(p.numel() for p in layer.parameters())
    assert n_sk - n_sum == 32 * 32 + 2 * 32 + 32 * 64  # W (d×C), BN(d), A (M·C×d) with d = 32
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(layer(x), layer.paths[0](x) + layer.paths[1](x))
    assert layer.aggregation is Aggregation.SUM


def test_default_is_papers_sk_unit():
    layer = SKConv2d(128, 128)
    assert layer.branches == (Branch(3, 1), Branch(3, 2))
    assert [p.conv.dilation for p in layer.paths] == [(1, 1), (2, 2)]
    assert [p.conv.groups for p in layer.paths] == [32, 32]
    assert all(p.conv.bias is None for p in layer.paths)
    assert layer.attn_dim == 32
    assert layer.fuse.fc.bias is None and layer.select.fc.bias is None
    assert layer.select.fc.out_channels == 2 * 128
    assert attention_dim(1024) == 64 and attention_dim(128) == 32


def test_true_large_kernels_and_per_path_groups():
    layer = SKConv2d(64, 64, groups=32, branches=[(3, 1), (5, 1, 64), (7, 1, 64)])
    assert [p.conv.kernel_size for p in layer.paths] == [(3, 3), (5, 5), (7, 7)]
    assert [p.conv.groups for p in layer.paths] == [32, 64, 64]
    assert layer.eval()(torch.randn(1, 64, 9, 9)).shape == (1, 64, 9, 9)


def test_parse_branches_forms():
    assert parse_branches((3, 5, 7)) == (Branch(3, 1), Branch(3, 2), Branch(3, 3))
    assert parse_branches("3,5") == (Branch(3, 1), Branch(3, 2))
    assert parse_branches("3d1, 5d1g64") == (Branch(3, 1), Branch(5, 1, 64))
    assert parse_branches([(3, 2), Branch(5, 1)]) == (Branch(3, 2), Branch(5, 1))
    assert parse_branches(1) == (Branch(1, 1),)
    assert Branch(3, 2).receptive_field == 5 and Branch(3, 3).receptive_field == 7


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"branches": ()}, "branches is empty"),
        ({"branches": "3,x"}, "cannot parse branch 'x'"),
        ({"branches": (4,)}, "odd"),
        ({"branches": [(3, 0)]}, "dilation must be ≥ 1"),
        ({"groups": 5}, "in_channels (path 0: 3d1)=64 is not divisible by groups=5"),
        ({"aggregation": "max"}, "aggregation must be one of 'sk', 'sum'"),
        ({"stride": 0}, "stride must be ≥ 1"),
        ({"reduction": 2.5}, "reduction must be an integer"),
        ({"branches": [(3, 1, 6)]}, "not divisible by groups=6"),
    ],
)
def test_bad_configuration_is_rejected_at_construction(kwargs, message):
    with pytest.raises(ConfigError) as info:
        SKConv2d(64, 64, **kwargs)
    assert message in str(info.value)


def test_wrong_input_names_expected_and_got():
    layer = SKConv2d(64, 64)
    with pytest.raises(InputShapeError, match="expects 64 input channels, got 32"):
        layer(torch.randn(2, 32, 8, 8))
    with pytest.raises(InputShapeError, match="4-D input"):
        layer(torch.randn(64, 8, 8))


def test_batch_of_one_in_training_gives_clear_error():
    layer = SKConv2d(32, 32, groups=4).train()
    with pytest.raises(InputShapeError, match="batch of at least 2"):
        layer(torch.randn(1, 32, 8, 8))
    assert layer.eval()(torch.randn(1, 32, 8, 8)).shape == (1, 32, 8, 8)


def test_channels_last_is_preserved():
    layer = SKConv2d(64, 64).to(memory_format=torch.channels_last)
    x = torch.randn(2, 64, 8, 8).to(memory_format=torch.channels_last)
    out = layer(x)
    assert out.is_contiguous(memory_format=torch.channels_last)
    out.sum().backward()


def test_nothing_recorded_without_a_hook():
    layer = SKConv2d(32, 32, groups=4).eval()
    before = {k for k, v in vars(layer).items() if isinstance(v, torch.Tensor)}
    layer(torch.randn(2, 32, 4, 4))
    after = {k for k, v in vars(layer).items() if isinstance(v, torch.Tensor)}
    assert before == after == set()
    assert not layer.select._forward_hooks


@pytest.mark.parametrize(("kernel", "dilation", "size"), [(3, 2, 8), (3, 2, 9), (3, 3, 10), (5, 2, 7), (3, 2, 1)])
def test_subsampled_dilated_conv_equals_native(kernel, dilation, size):
    from sknet.layers.conv_bn_act import SubsampledDilatedConv2d, make_conv

    conv = make_conv(8, 16, kernel, stride=dilation, dilation=dilation, groups=4).double()
    assert isinstance(conv, SubsampledDilatedConv2d)
    x = torch.randn(2, 8, size, size + 3, dtype=torch.double, requires_grad=True)
    native = torch.nn.functional.conv2d(x, conv.weight, None, dilation, conv.padding, dilation, 4)
    out = conv(x)
    torch.testing.assert_close(out, native)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [x, conv.weight], grad)
    want = torch.autograd.grad(native, [x, conv.weight], grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    assert list(conv.state_dict()) == ["weight"]


def test_stride2_dilated_path_uses_subsampled_conv():
    from sknet.layers.conv_bn_act import SubsampledDilatedConv2d

    layer = SKConv2d(32, 32, stride=2, groups=4)
    assert type(layer.paths[0].conv) is torch.nn.Conv2d
    assert isinstance(layer.paths[1].conv, SubsampledDilatedConv2d)
    assert not isinstance(SKConv2d(32, 32, stride=1, groups=4).paths[1].conv, SubsampledDilatedConv2d)
