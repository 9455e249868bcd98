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


def test_weights_depend_on_errors_and_the_record_only():
    """sknet.weights only reads and writes files: it imports nothing of sknet but errors and the
    preprocessing record it validates (sknet.data.config, the ground floor)."""
    from pathlib import Path

    import sknet.weights

    source = Path(sknet.weights.__file__).read_text()
    imports = [line.strip() for line in source.splitlines() if line.strip().startswith(("from sknet", "import sknet"))]
    allowed = ("from sknet.errors import ", "from sknet.data.config import ")
    assert all(line.startswith(allowed) for line in imports), imports


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
    # config.py is the table of option declarations (type, default, check, help, resume policy, one each):
    # long because there are ~50 options, not because it holds logic.
    declarations = sizes.pop("config.py")
    assert max(sizes.values()) <= 250, sizes
    assert declarations <= 350


CLOCKS = {"perf_counter", "perf_counter_ns", "monotonic", "monotonic_ns", "time", "time_ns", "process_time"}
REASON = "# wall-clock:"  # the comment that says why a test may depend on how fast the machine is


def _reads_clock(node) -> bool:
    import ast

    return any(
        isinstance(n, ast.Call)
        and isinstance(n.func, ast.Attribute)
        and n.func.attr in CLOCKS
        and isinstance(n.func.value, ast.Name)
        and n.func.value.id == "time"
        for n in ast.walk(node)
    )


def wall_clock_dependencies(source: str) -> list[tuple[int, str]]:
    """(line, what) for each `timeout=` keyword of a call and each comparison with a clock reading (a
    `time.perf_counter()`-like call, or a name assigned from one in the same function) that has no
    `# wall-clock: <reason>` comment on its lines or on the line above."""
    import ast

    tree = ast.parse(source)
    lines = source.splitlines()
    found = []

    def excused(node) -> bool:
        span = lines[max(node.lineno - 2, 0) : node.end_lineno]
        return any(REASON in line for line in span)

    for scope in ast.walk(tree):
        if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        clocked = {
            t.id
            for n in ast.walk(scope)
            if isinstance(n, ast.Assign) and _reads_clock(n.value)
            for t in ast.walk(n)
            if isinstance(t, ast.Name) and isinstance(t.ctx, ast.Store)
        }
        for n in ast.walk(scope):
            if isinstance(n, ast.Compare):
                names = {x.id for x in ast.walk(n) if isinstance(x, ast.Name)}
                if (_reads_clock(n) or names & clocked) and not excused(n):
                    found.append((n.lineno, "compares with the clock"))
    for n in ast.walk(tree):
        if isinstance(n, ast.Compare) and _reads_clock(n) and not excused(n):
            found.append((n.lineno, "compares with the clock"))
        if isinstance(n, ast.Call) and any(k.arg == "timeout" for k in n.keywords) and not excused(n):
            found.append((n.lineno, "timeout="))
    return sorted(set(found))


def test_the_rule_finds_timeouts_and_clock_comparisons():
    """The checker below is itself checked: it catches each kind and accepts a stated reason."""
    source = (
        "import subprocess, time\n"
        "def f():\n"
        "    subprocess.run(['x'], timeout=5)\n"
        "    start = time.perf_counter()\n"
        "    assert time.perf_counter() - start < 5\n"
        "    deadline = time.monotonic() + 1\n"
        "    while time.monotonic() < deadline:\n"
        "        pass\n"
        "    # wall-clock: a deadlock is what this checks\n"
        "    subprocess.run(['x'], timeout=5)\n"
    )
    assert [line for line, _ in wall_clock_dependencies(source)] == [3, 5, 7]


def test_no_test_depends_on_the_machine_being_idle():
    """A busy machine is slow, not wrong: no test sets a subprocess timeout or compares elapsed time
    unless a `# wall-clock: <reason>` comment says why it must (CI's own limit catches a hang)."""
    from pathlib import Path

    tests = Path(__file__).parent
    offenders = [
        f"{path.relative_to(tests)}:{line}: {what}"
        for path in sorted(tests.rglob("*.py"))
        for line, what in wall_clock_dependencies(path.read_text())
    ]
    assert not offenders, "\n".join(offenders)


# ---------------------------------------------------------------------------------------------------------
# The floors of docs/architecture.md: no module imports one above it, and no import cycle at all.


def _floors() -> list[tuple[str, int]]:
    """(module prefix, floor) from docs/architecture.md's numbered list, longest prefixes first."""
    import re
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text()
    floors = []
    for line in text.splitlines():
        match = re.match(r"^(\d+)\. (.*?) — ", line)
        if match:
            floors += [(name, int(match.group(1))) for name in re.findall(r"`(sknet[\w.]*)`", match.group(2))]
    return sorted(floors, key=lambda item: -len(item[0]))


def _import_graph() -> dict[str, set[str]]:
    """Every sknet module's imports of sknet modules, at module and function level. `from P import name`
    counts as an import of the module defining `name`: P.name if that is a module, else the module P's
    __init__ takes `name` from (its imports, or a lazy table `_HOMES`), else P itself."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[1] / "src"
    files = {}
    for path in (root / "sknet").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    trees = {name: ast.parse(path.read_text()) for name, path in files.items()}

    def home(package: str, name: str, seen=()) -> str:
        if f"{package}.{name}" in files:
            return f"{package}.{name}"
        if package not in files or files[package].name != "__init__.py" or package in seen:
            return package
        for node in ast.walk(trees[package]):
            if isinstance(node, ast.ImportFrom) and node.module and any(a.asname or a.name == name for a in node.names):
                return home(node.module, name, (*seen, package))
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_HOMES" for t in node.targets):
                table = ast.literal_eval(node.value)
                if name in table:
                    return table[name]
        return package

    graph = {}
    for module, tree in trees.items():
        package = module if files[module].name == "__init__.py" else module.rpartition(".")[0]
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.startswith("sknet")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                    )
                if base == "sknet" or base.startswith("sknet."):
                    targets |= {home(base, a.name) for a in node.names}
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def _floor(module: str, floors) -> int:
    return next(floor for prefix, floor in floors if module == prefix or module.startswith(prefix + "."))


def test_every_module_has_a_floor_and_imports_none_above_it():
    floors = _floors()
    assert len(floors) >= 20, "docs/architecture.md's list of floors was not found"
    graph = _import_graph()
    upward = [
        f"{a} (floor {_floor(a, floors)}) imports {b} (floor {_floor(b, floors)})"
        for a, targets in graph.items()
        for b in targets
        if _floor(b, floors) > _floor(a, floors)
    ]
    assert not upward, upward


def test_the_package_has_no_import_cycle():
    graph = _import_graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v), on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_the_rule_sees_function_level_imports_and_re_exports():
    """The checker is itself checked: a function-level import and a name re-exported by a package count."""
    graph = _import_graph()
    assert "sknet.layers.selective_kernel" in graph["sknet.layers.bottleneck"]  # `from sknet.layers import SKConv2d`
    assert "sknet.data.multiscale" in graph["sknet.data.datasets"]  # imported inside a function
