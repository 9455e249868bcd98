"""FX symbolic tracing (torchvision's feature extraction, torch.ao's FX quantization) and TorchScript."""

import warnings

import pytest
import torch

import sknet
from sknet import ConfigError, InputShapeError

MODELS = {"sknet_tiny": 28, "sknet26": 64, "senet26": 64, "shufflenetv2_050_sk": 64, "mobilenetv2_100_sk": 64}


@pytest.mark.parametrize("name", list(MODELS))
def test_torchvision_feature_extractor_gives_forward_stages(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    model = sknet.create_model(name).eval()
    size = MODELS[name]
    x = torch.randn(2, model.in_chans, size, size)
    extractor = create_feature_extractor(model, {stage: stage for stage in model.stage_names})
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        maps = extractor(x)
        h, stages = model.stem(x), []
        for stage in model.stages():
            stages.append(h := stage(h))
        for got, want in zip(maps.values(), stages, strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


def test_fx_training_mode_trace_runs_the_plain_sk_composition():
    model = sknet.create_model("sknet_tiny").train()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-6)


def test_torch_ao_fx_quantization_runs():
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = sknet.create_model("sknet_tiny").eval()
    x = torch.randn(16, 1, 28, 28)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's own deprecation notices
        prepared = prepare_fx(model, get_default_qconfig_mapping("x86"), (x,))
        prepared(x)  # calibration
        quantized = convert_fx(prepared)
    with torch.no_grad():
        want, got = model(x), quantized(x)
    assert got.shape == want.shape
    assert (got - want).abs().max() < 0.2 * want.abs().max()  # int8: close, not equal


def test_eager_calls_keep_the_input_check():
    model = sknet.create_model("sknet_tiny").eval()
    with pytest.raises(InputShapeError, match="expects 1 input channels"):
        model(torch.randn(1, 3, 28, 28))
    traced = torch.fx.symbolic_trace(model)  # a trace has no check: torch's own error, no sknet message
    assert traced(torch.randn(1, 1, 28, 28)).shape == (1, 10)


@pytest.mark.parametrize("features_only", [False, True])
def test_torchscript_is_refused_in_one_line_naming_the_export(features_only):
    model = sknet.create_model("sknet_tiny", features_only=features_only)
    with pytest.raises(ConfigError, match=r"sknet export --format pt2") as info:
        torch.jit.script(model)
    assert "\n" not in str(info.value)
