import pytest
import torch

import sknet


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("branches", [(3,), (3, 5), (3, 5, 7)])
def test_sk_conv_compiles_without_graph_breaks(training, branches):
    torch._dynamo.reset()
    layer = sknet.SKConv2d(32, 32, stride=2, groups=4, branches=branches).train(training)
    # fullgraph=True turns any graph break into an error; the eager backend keeps the test fast.
    compiled = torch.compile(layer, fullgraph=True, backend="eager")
    x = torch.randn(2, 32, 9, 9, requires_grad=training)
    out = compiled(x)
    torch.testing.assert_close(out, layer(x))
    if training:
        out.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_small_model_compiles_without_graph_breaks():
    torch._dynamo.reset()
    model = sknet.create_model("sknet_tiny").eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(compiled(x), model(x))
