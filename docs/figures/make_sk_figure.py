"""Draws docs/figures/sk_layer.png, the SK convolution's three steps (Split, Fuse, Select) for M = 2 paths.

python docs/figures/make_sk_figure.py [--out docs/figures/sk_layer.png]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

BOXES = {  # name: (x, y, text, colour)
    "x": (0.4, 2.0, "X\nC×H×W", "#dddddd"),
    "u1": (2.6, 3.0, "3×3 conv\nBN, ReLU\n→ U₁", "#9ecae1"),
    "u2": (2.6, 1.0, "3×3 conv, dil. 2\nBN, ReLU\n→ U₂", "#fdae6b"),
    "u": (4.8, 2.0, "U = U₁ + U₂", "#dddddd"),
    "s": (6.6, 2.0, "s = GAP(U)\nC", "#dddddd"),
    "z": (8.4, 2.0, "z = ReLU(BN(W s))\nd = max(C/r, L)", "#c7e9c0"),
    "a": (10.4, 2.0, "softmax over paths\na₁ + a₂ = 1\nper channel", "#c7e9c0"),
    "v": (12.4, 2.0, "V = a₁·U₁ + a₂·U₂\nC×H×W", "#dddddd"),
}
ARROWS = [("x", "u1"), ("x", "u2"), ("u1", "u"), ("u2", "u"), ("u", "s"), ("s", "z"), ("z", "a"), ("a", "v")]
STEPS = [(2.6, "Split"), (6.6, "Fuse"), (11.4, "Select")]


def draw(out: Path) -> None:
    fig, ax = plt.subplots(figsize=(12, 3.6))
    width, height = 1.6, 1.0
    for x, y, text, colour in BOXES.values():
        ax.add_patch(
            FancyBboxPatch(
                (x - width / 2, y - height / 2),
                width,
                height,
                boxstyle="round,pad=0.05",
                facecolor=colour,
                edgecolor="black",
                linewidth=0.8,
            )
        )
        ax.text(x, y, text, ha="center", va="center", fontsize=8)
    for start, end in ARROWS:
        (x0, y0), (x1, y1) = BOXES[start][:2], BOXES[end][:2]
        ax.annotate(
            "",
            xy=(x1 - width / 2 - 0.05, y1),
            xytext=(x0 + width / 2 + 0.05, y0),
            arrowprops={"arrowstyle": "->", "linewidth": 0.8},
        )
    for name in ("u1", "u2"):  # the selected paths reach the weighted sum
        x0, y0 = BOXES[name][:2]
        ax.annotate(
            "",
            xy=(BOXES["v"][0], 2.0 + (0.55 if y0 > 2 else -0.55)),
            xytext=(x0, y0 + (0.55 if y0 > 2 else -0.55)),
            arrowprops={
                "arrowstyle": "->",
                "linewidth": 0.6,
                "linestyle": "--",
                "color": "grey",
                "connectionstyle": f"arc3,rad={-0.12 if y0 > 2 else 0.12}",
            },
        )
    for x, label in STEPS:
        ax.text(x, 4.1, label, ha="center", fontsize=11, weight="bold")
    ax.set_xlim(-0.5, 13.4)
    ax.set_ylim(-0.2, 4.5)
    ax.axis("off")
    ax.set_title("Selective Kernel convolution (Li et al., CVPR 2019), M = 2 paths", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("sk_layer.png"))
    draw(parser.parse_args().out)
