"""Reading a configuration file: YAML (1.2's numbers) or TOML, a mapping of option names to values."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from sknet.errors import ConfigError, clip, one_line


class _YAMLLoader(yaml.SafeLoader):
    """YAML 1.1 reads 1e-4 (no dot) as text; here it is a number, as in YAML 1.2, TOML and Python. A key
    given twice in one mapping is refused (YAML requires unique keys; PyYAML would keep the last silently),
    as TOML's parser refuses it; keys a merge (``<<``) brings in may be overridden, as YAML intends."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    duplicate = key in seen
                    seen.add(key)
                except TypeError:  # an unhashable key: the base class names it
                    continue
                if duplicate:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark, f"duplicate key {key!r}", key_node.start_mark
                    )
        return super().construct_mapping(node, deep)


_YAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _reason(err: Exception) -> str:
    """A parser's error on one line: YAML's as its problem and where (its own text spans lines)."""
    mark = getattr(err, "problem_mark", None)
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        return clip(f"{err.problem or err.context} (line {mark.line + 1}, column {mark.column + 1})")
    return clip(err)


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML or TOML file (TOML by the suffix .toml). ConfigError, one line naming the file,
    for anything else: a folder, a file that is not UTF-8 text, text that does not parse, or a value other
    than a mapping with text keys."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {one_line(path)} is a folder: give a YAML (.yaml, .yml) or TOML (.toml) file")
    if not path.is_file():
        raise ConfigError(f"config file {one_line(path)} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {one_line(path)} is not text (YAML or TOML, UTF-8)") from None
    try:
        values = tomllib.loads(text) if path.suffix == ".toml" else yaml.load(text, Loader=_YAMLLoader)
    # YAML's constructors raise ValueError and others for values they cannot build (a date such as
    # 2020-13-45), and deeply nested text exhausts the recursion limit.
    except (tomllib.TOMLDecodeError, yaml.YAMLError, ValueError, TypeError, OverflowError, RecursionError) as err:
        raise ConfigError(f"cannot parse {one_line(path)}: {_reason(err)}") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(key, str) for key in values):
        raise ConfigError(f"{one_line(path)} must hold a mapping of option names to values")
    return values
