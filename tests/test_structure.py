"""The package's import graph: models know nothing of training, conversion or the command line."""

import subprocess
import sys


def test_models_import_without_train_convert_or_cli():
    code = (
        "import sknet.models, sys; "
        "bad = [m for m in sys.modules if m.startswith(('sknet.train', 'sknet.convert', 'sknet.cli'))]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_weights_depend_on_errors_only():
    """sknet.weights is read by models, training, the CLI and the exporters: at its top level it imports
    nothing of sknet but errors (the eval transform imports sknet.data inside its method)."""
    from pathlib import Path

    import sknet.weights

    source = Path(sknet.weights.__file__).read_text()
    top_level = [line for line in source.splitlines() if line.startswith(("from sknet", "import sknet"))]
    assert top_level == ["from sknet.errors import CheckpointError"], top_level


def test_one_loader_type_and_no_in_memory_branches_outside_data():
    from pathlib import Path

    src = Path(__file__).parents[1] / "src" / "sknet"
    offenders = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "spec.in_memory" in p.read_text() and p.parent.name != "data"
    ]
    assert not offenders, offenders


def test_no_file_in_train_is_over_250_lines():
    from pathlib import Path

    train = Path(__file__).parents[1] / "src" / "sknet" / "train"
    sizes = {p.name: len(p.read_text().splitlines()) for p in train.glob("*.py")}
    assert max(sizes.values()) <= 250, sizes
