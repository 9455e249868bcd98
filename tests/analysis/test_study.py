import json

import torch

from sknet.analysis import run_scale_study
from sknet.analysis.plots import plot_figure3, plot_figure4
from tests.analysis.test_attention import known_model


def batches(n_batches=3, batch=4):
    gen = torch.Generator().manual_seed(0)
    for i in range(n_batches):
        yield torch.randn(batch, 1, 28, 28, generator=gen), torch.tensor([0, 1, 2, i % 3])[:batch]


def test_scale_study_summaries_hold_the_constructed_attention(tmp_path):
    model, _ = known_model()
    study = run_scale_study(
        model, batches(), scales=(1.0, 1.5, 2.0), classes=["a", "b", "c", "d"], example_indices=[1, 9]
    )
    assert study.units == ["SK_2_1", "SK_3_1", "SK_4_1"] and study.profile_unit == "SK_3_1"
    assert study.num_images == 12 and study.difference["SK_2_1"].shape == (3, 12)
    rows = {(r["unit"], r["scale"]): r for r in study.unit_summary()}
    assert abs(rows[("SK_4_1", 2.0)]["mean"] - 0.6) < 1e-6 and rows[("SK_4_1", 2.0)]["std"] < 1e-6
    assert abs(rows[("SK_3_1", 1.5)]["mean"] - 0.5) < 1e-6
    per_class = study.class_means("SK_2_1")
    assert per_class.shape == (3, 4)
    assert torch.allclose(per_class[:, :3], torch.full((3, 3), 0.2, dtype=torch.float64), atol=1e-6)
    assert per_class[:, 3].isnan().all()  # no image of class d
    assert study.ordering("SK_2_1")["increasing"] is False  # constant attention does not grow
    assert study.profiles.shape == (3, 12, 4) and set(study.examples) == {1, 9}
    assert study.examples[9].shape == (3, 1, 28, 28)

    paths = study.save(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["images"] == 12 and abs(data["per_class"]["SK_4_1"]["2.0"]["a"] - 0.6) < 1e-6
    assert paths["units"].read_text().count("\n") == 1 + 3 * 3
    rows = paths["images"].read_text().splitlines()
    assert len(rows) == 1 + 12 and rows[0].startswith("image,label,class,correct@1,")
    assert rows[1].split(",")[-1] == "0.60000"  # SK_4_1 at 2×, image 0
    for plot in (plot_figure3, plot_figure4):
        png = plot(study, tmp_path / f"{plot.__name__}.png", title="t")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_enlarging_changes_attention_of_a_real_model():
    model = __import__("sknet").create_model("sknet_tiny").eval()
    study = run_scale_study(model, batches(1), scales=(1.0, 2.0))
    d = study.difference["SK_2_1"]
    assert not torch.equal(d[0], d[1])  # the input really was enlarged
    assert study.classes == [str(k) for k in range(10)]
