import pytest
import torch

import sknet
from sknet.cli import main
from sknet.convert.caffe import from_caffe, layer_map, read_caffemodel, read_prototxt_layers, write_caffemodel
from sknet.convert.protobuf import CaffeLayer, read_net, write_net
from tests.convert.test_timm import randomise_bn

PROTOTXT = """name: "sknet50_basic"
layer {
  name: "conv1/7x7_s2"
  type: "Convolution"
  bottom: "data"
  top: "conv1/7x7_s2"
  param { lr_mult: 1.0 decay_mult: 1.0 }
  convolution_param {
    num_output: 64
    bias_term: false
    pad: 3
    kernel_size: 7
    stride: 2
    weight_filler { type: "msra" }
  }
}
layer {
  name: "pool1/3x3_s2"   # ceil mode: no pad
  type: "Pooling"
  bottom: "conv1/7x7_s2/bn"
  top: "pool1/3x3_s2"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 }
}
"""


def test_wire_format_round_trip():
    blobs = [torch.randn(4, 2, 3, 3).numpy(), torch.randn(1, 5, 1, 1).numpy()]
    name, layers = read_net(write_net("net", [CaffeLayer("a/b", "Convolution", blobs), CaffeLayer("c", "ReLU")]))
    assert name == "net" and [(x.name, x.type, len(x.blobs)) for x in layers] == [
        ("a/b", "Convolution", 2),
        ("c", "ReLU", 0),
    ]
    assert (layers[0].blobs[0] == blobs[0]).all() and layers[0].blobs[1].shape == (1, 5, 1, 1)


@pytest.fixture(scope="module")
def sknet26_caffe(tmp_path_factory):
    """An SKNet-26 with the released SKNet-101's d = 16 in conv3, random weights and BN statistics."""
    torch.manual_seed(0)
    model = randomise_bn(sknet.create_model("sknet26", stem_pool="caffe", attn_dims=(None, 16, None, None))).eval()
    path = write_caffemodel(model, tmp_path_factory.mktemp("caffe") / "sknet26.caffemodel")
    return model, path


def test_official_layer_names():
    with torch.device("meta"):
        names = [n for n, _, _ in layer_map(sknet.create_model("sknet50"))]
    for expected in (
        "conv1/7x7_s2/bn",
        "conv2_1/3x3g32",
        "conv2_1/3x3g32d2/bn",
        "conv3_4/B_fc1/bn",
        "conv5_3/B_fc2",
        "conv4_1/1x1_proj/bn",
        "conv5_3/1x1_increase",
        "classifier",
    ):
        assert expected in names
    assert "conv2_2/1x1_proj" not in names


def test_caffemodel_round_trip_gives_equal_outputs(sknet26_caffe):
    model, path = sknet26_caffe
    _, layers = read_caffemodel(path)
    assert {x.type for x in layers} == {"Convolution", "CuDNNBatchNorm", "InnerProduct"}
    assert next(x for x in layers if x.name == "conv3_1/B_fc1").blobs[0].shape == (16, 256, 1, 1)
    converted, name, options = from_caffe(path)
    assert name == "sknet26" and options["attn_dims"] == (None, 16, None, None)
    assert options["stem_pool"] == "caffe"
    x = torch.randn(2, 3, 67, 67)  # odd size: the ceil-mode stem pool matters
    with torch.no_grad():
        torch.testing.assert_close(converted(x), model(x), rtol=0, atol=1e-5)
    rgb, _, _ = from_caffe(path, bgr_to_rgb=True)
    with torch.no_grad():
        torch.testing.assert_close(rgb(x.flip(1)), model(x), rtol=0, atol=1e-5)


def test_convert_cli_from_caffe(sknet26_caffe, tmp_path, capsys):
    model, path = sknet26_caffe
    out = tmp_path / "w.safetensors"
    assert main(["convert", "--from", "caffe", str(path), "--out", str(out)]) == 0
    loaded = sknet.create_model("sknet26", weights=out).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=1e-5)


def test_prototxt_reader(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(PROTOTXT)
    layers = read_prototxt_layers(path)
    assert layers["conv1/7x7_s2"]["convolution_param.num_output"] == "64"
    assert layers["pool1/3x3_s2"]["pooling_param.pool"] == "MAX" and "pooling_param.pad" not in layers["pool1/3x3_s2"]


def test_bad_caffe_files_are_clear_errors(sknet26_caffe, tmp_path, capsys):
    _, path = sknet26_caffe
    truncated = tmp_path / "cut.caffemodel"
    truncated.write_bytes(path.read_bytes()[:100_000])
    assert (
        main(["convert", "--from", "caffe", str(truncated), "--out", str(tmp_path / "w.safetensors")]) == 4
    )  # a weights-file error
    assert "not a readable caffemodel" in capsys.readouterr().err
    proto = tmp_path / "short.prototxt"
    proto.write_text(PROTOTXT)
    with pytest.raises(sknet.CheckpointError, match="the prototxt has no layer 'conv1/7x7_s2/bn'"):
        from_caffe(path, proto)
    partial = tmp_path / "partial.caffemodel"
    _, layers = read_caffemodel(path)
    partial.write_bytes(write_net("x", [x for x in layers if x.name != "conv4_2/B_fc2"]))
    with pytest.raises(sknet.CheckpointError, match="conv4_2/B_fc2"):
        from_caffe(partial)
