"""benchmarks/readers.py as a smoke run: the three readers read every image of the same set."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("webdataset")


def test_readers_benchmark_smoke(tmp_path, capsys):
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "readers.py"
    spec = importlib.util.spec_from_file_location("readers_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "readers.json"
    module.main(["--images", "8", "--rounds", "1", "--batch", "4", "--size", "32", "--json", str(out)])
    table = capsys.readouterr().out
    for name in ("PIL decode", "folder reader", "shard reader"):
        assert f"| {name} |" in table
    rates = json.loads(out.read_text())["img_per_s"]
    assert all(len(v) == 1 and v[0] > 0 for v in rates.values())
