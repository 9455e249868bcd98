"""benchmarks/readers.py as a smoke run: the three readers read every image of the same set."""

import json

import pytest

from tests.benchmark_scripts import benchmark_script

pytest.importorskip("webdataset")


def test_readers_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "readers.json"
    with benchmark_script("readers") as module:
        module.main(["--images", "8", "--rounds", "1", "--batch", "4", "--size", "32", "--json", str(out)])
    table = capsys.readouterr().out
    for name in ("PIL decode", "folder reader", "shard reader"):
        assert f"| {name} |" in table
    rates = json.loads(out.read_text())["img_per_s"]
    assert all(len(v) == 1 and v[0] > 0 for v in rates.values())
