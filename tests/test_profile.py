import json

from sknet.paper import PAPER
from sknet.profile import format_table, profile_model, to_json


def test_profile_row_against_paper():
    row = profile_model("sknet50")
    assert row.params == 27_479_784
    assert row.paper_params == PAPER["sknet50"].params
    assert abs(row.params_diff) < 0.001 and abs(row.macs_diff) < 0.01
    table = format_table([row])
    assert "27,479,784" in table and "4.463" in table and "4.47" in table


def test_profile_overrides_drop_paper_figures_and_scale_with_resolution():
    base = profile_model("sknet26")
    m3 = profile_model("sknet26", overrides={"branches": (3, 5, 7)})
    summed = profile_model("sknet26", overrides={"aggregation": "sum"})
    assert m3.params > base.params > summed.params
    assert m3.paper_params is None and m3.label == "sknet26[branches=3+5+7]"
    big = profile_model("sknet26", 448)
    assert abs(big.macs / base.macs - 4) < 0.02
    rows = json.loads(to_json([base, m3]))
    assert rows[1]["overrides"] == {"branches": "3+5+7"} and rows[0]["params"] == base.params


def test_small_models_show_mmacs():
    table = format_table([profile_model("sknet_tiny"), profile_model("sknet50")])
    assert "5.859M" in table and "4.463G" in table and "4.47G" in table
