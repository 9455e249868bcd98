"""Figures in the style of the paper's Figures 3 and 4, saved as PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from sknet.analysis.study import ScaleStudy


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, title: str) -> Path:
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _show_image(ax, image: torch.Tensor) -> None:
    """(C, H, W) normalised → displayed with its own min-max range."""
    img = image.float()
    img = (img - img.min()) / (img.max() - img.min()).clamp_min(1e-8)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(img[:3].permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def plot_figure3(study: ScaleStudy, path: str | Path, units: Sequence[str] | None = None, title: str = "") -> Path:
    """(a), (b): two example images at every scale with their channel profile on `study.profile_unit`;
    (c): mean attention difference per unit and scale, averaged over all images, ± one standard deviation."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    units = list(units or study.units)
    examples = list(study.examples.items())[:2]
    scales = study.scales
    n_scales = len(scales)
    rows = len(examples) + 1
    fig = plt.figure(figsize=(2.0 * n_scales + 5.0, 2.4 * rows + 0.6))
    grid = fig.add_gridspec(rows, n_scales + 1, width_ratios=[1.0] * n_scales + [2.6])
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for r, (index, images) in enumerate(examples):
        for i, scale in enumerate(scales):
            ax = fig.add_subplot(grid[r, i])
            _show_image(ax, images[i])
            ax.set_title(f"{scale:g}×", fontsize=9)
            if i == 0:
                label = study.classes[int(study.labels[index])]
                ax.set_ylabel(f"({'ab'[r]}) #{index}\n{label}", fontsize=9)
        ax = fig.add_subplot(grid[r, n_scales])
        groups = study.profiles.shape[-1]
        for i, scale in enumerate(scales):
            ax.plot(
                range(groups),
                study.profiles[i, index].numpy(),
                marker="o",
                ms=3,
                color=colors[i % len(colors)],
                label=f"{scale:g}×",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("channel group (16 channels each)", fontsize=8)
        ax.set_ylabel(f"attention on large kernel\n{study.profile_unit}", fontsize=8)
        ax.legend(fontsize=7)
        ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[rows - 1, :])
    summary = {(r["unit"], r["scale"]): r for r in study.unit_summary()}
    width = 0.8 / n_scales
    for i, scale in enumerate(scales):
        xs = [u + (i - (n_scales - 1) / 2) * width for u in range(len(units))]
        means = [summary[(unit, scale)]["mean"] for unit in units]
        stds = [summary[(unit, scale)]["std"] for unit in units]
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=colors[i % len(colors)], label=f"{scale:g}×")
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(range(len(units)))
    ax.set_xticklabels(units)
    ax.set_ylabel("mean attention difference\n(large − small kernel)", fontsize=8)
    ax.set_title(f"(c) all {study.num_images} images, mean ± std", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path, title)


def plot_figure4(study: ScaleStudy, path: str | Path, units: Sequence[str] | None = None, title: str = "") -> Path:
    """Per unit: the mean attention difference of every class (x) at every scale (one curve each)."""
    plt = _pyplot()
    units = list(units or study.units)
    cols = min(len(units), 4)
    rows = -(-len(units) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    k = len(study.classes)
    for ax, unit in zip(axes.flat, units, strict=False):
        means = study.class_means(unit)
        for i, scale in enumerate(study.scales):
            ax.plot(range(k), means[i].numpy(), marker="o" if k <= 50 else None, ms=3, lw=1.0, label=f"{scale:g}×")
        ax.set_title(unit, fontsize=10)
        ax.set_xlabel("class", fontsize=8)
        if k <= 20:
            ax.set_xticks(range(k))
            ax.set_xticklabels(study.classes, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("mean attention difference", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(units) :]:
        ax.axis("off")
    return _save(fig, path, title)
