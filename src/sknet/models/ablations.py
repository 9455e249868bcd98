"""The paper's ablations (Tables 6 and 7) as named SKNet-50 configurations.

Every row is ``sknet50`` with other paths (``branches``) or aggregation; any family accepts the same
options through ``create_model(name, branches=..., aggregation=...)`` and ``sknet train --branches/
--aggregation``. Naming: k3/k5/k7 = the paper's 3×3 / "5×5" / "7×7" paths (3×3 with dilation 1 / 2 / 3),
``_sum`` = the paths added without attention; Table 6 rows name their second path.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sknet.models.registry import register_model
from sknet.models.resnext import DEPTHS, SK_BLOCK, SK_OPTIONS, ResNeXt, build_resnext


def _register(name: str, doc: str, **fixed: object) -> Callable[..., nn.Module]:
    def builder(**kwargs: object) -> ResNeXt:
        return build_resnext(DEPTHS[50], SK_BLOCK, **{**fixed, **kwargs})

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return register_model("ablation", SK_OPTIONS)(builder)


# Table 6: the first path is 3×3, D = 1, G = 32; the second varies (3×3 D = 2 is sknet50 itself).
TABLE6 = {
    "sknet50_d3": ("3d1,3d3", "Table 6: 3×3 D=1 + 3×3 D=3 (G=32), SK attention."),
    "sknet50_k5g64": ("3d1,5d1g64", "Table 6: 3×3 D=1 + a true 5×5 with G=64 to hold the cost, SK attention."),
    "sknet50_k7g128": ("3d1,7d1g128", "Table 6: 3×3 D=1 + a true 7×7 with G=128 to hold the cost, SK attention."),
}
# Table 7: every combination of the 3×3, "5×5" and "7×7" paths, with SK attention or a plain sum.
# One path has nothing to select: those rows are plain ResNeXt-50s with that kernel (22.23% for K3).
PATHS = {"k3": "3", "k5": "5", "k7": "7", "k3k5": "3,5", "k3k7": "3,7", "k5k7": "5,7", "k3k5k7": "3,5,7"}

for _name, (_branches, _doc) in TABLE6.items():
    _register(_name, _doc, branches=_branches)
for _key, _branches in PATHS.items():
    _kernels = " + ".join(f"K{k}" for k in _key[1:].split("k"))
    if "," not in _branches:
        _register(
            f"sknet50_{_key}",
            f"Table 7: {_kernels} only (a single path, nothing to select).",
            branches=_branches,
            aggregation="sum",
        )
        continue
    if _key != "k3k5":  # K3 + K5 with SK is sknet50
        _register(f"sknet50_{_key}", f"Table 7: {_kernels} with SK attention.", branches=_branches)
    _register(
        f"sknet50_{_key}_sum",
        f"Table 7: {_kernels}, plain sum of the paths (no attention).",
        branches=_branches,
        aggregation="sum",
    )
