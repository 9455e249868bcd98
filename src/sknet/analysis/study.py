"""The paper's scale study (section 5): how each SK unit's attention moves as objects are enlarged."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.analysis.attention import (
    AttentionRecorder,
    channel_profile,
    last_unit_per_stage,
    mean_attention_difference,
    sk_units,
)
from sknet.analysis.scale import enlarge_center
from sknet.errors import ConfigError
from sknet.progress import Progress

# The files ScaleStudy.save writes into its folder.
STUDY_FILES = {
    "json": "attention.json",
    "units": "units.csv",
    "classes": "classes.csv",
    "profile": "profile.csv",
    "images": "images.csv",
}


@dataclass
class ScaleStudy:
    """Results for N images at S scales.

    difference[unit]: (S, N) mean attention difference (last path − first) per scale and image.
    profiles: (S, N, G) channel profile of `profile_unit` (attention on the last path, 16-channel means).
    correct: (S, N) whether the top-1 prediction was right at each scale.
    examples: image index → (S, C, H, W) enlarged inputs kept for figures.
    """

    scales: list[float]
    units: list[str]
    classes: list[str]
    labels: torch.Tensor
    difference: dict[str, torch.Tensor]
    profile_unit: str
    profiles: torch.Tensor
    correct: torch.Tensor
    examples: dict[int, torch.Tensor] = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def unit_summary(self) -> list[dict[str, Any]]:
        """One row per (unit, scale): mean, standard deviation and standard error over images."""
        rows = []
        for unit in self.units:
            for i, scale in enumerate(self.scales):
                values = self.difference[unit][i].double()
                n = len(values)
                std = values.std().item() if n > 1 else 0.0
                rows.append(
                    {
                        "unit": unit,
                        "scale": scale,
                        "mean": values.mean().item(),
                        "std": std,
                        "sem": std / math.sqrt(n),
                        "images": n,
                    }
                )
        return rows

    def class_means(self, unit: str) -> torch.Tensor:
        """(S, K): mean attention difference of `unit` per scale and class (NaN for a class with no image)."""
        k = len(self.classes)
        counts = torch.bincount(self.labels, minlength=k).double()
        values = self.difference[unit].double()
        sums = torch.zeros(len(self.scales), k, dtype=torch.float64).index_add_(1, self.labels, values)
        return sums / counts.where(counts > 0, torch.tensor(float("nan")))

    def ordering(self, unit: str) -> dict[str, Any]:
        """Does the unit's mean difference grow with the scale? Also: the number of classes whose mean grows
        monotonically over the scales, and the share of images whose own difference is larger at the
        largest scale than at the smallest (a paired comparison)."""
        means = [r["mean"] for r in self.unit_summary() if r["unit"] == unit]
        per_class = self.class_means(unit)
        valid = ~per_class.isnan().any(0)
        monotone = (per_class[1:] > per_class[:-1]).all(0) & valid
        return {
            "increasing": all(b > a for a, b in itertools.pairwise(means)),
            "change": means[-1] - means[0],
            "classes_increasing": int(monotone.sum()),
            "classes": int(valid.sum()),
            "images_increasing": (self.difference[unit][-1] > self.difference[unit][0]).double().mean().item(),
        }

    def accuracy(self) -> list[float]:
        return self.correct.double().mean(1).tolist()

    def to_dict(self) -> dict[str, Any]:
        return {
            "scales": self.scales,
            "images": self.num_images,
            "units": self.units,
            "accuracy": dict(zip([str(s) for s in self.scales], self.accuracy(), strict=True)),
            "summary": self.unit_summary(),
            "ordering": {unit: self.ordering(unit) for unit in self.units},
            "per_class": {
                unit: {
                    str(s): dict(zip(self.classes, map(_finite_or_none, row), strict=True))
                    for s, row in zip(self.scales, self.class_means(unit).tolist(), strict=True)
                }
                for unit in self.units
            },
            "profile_unit": self.profile_unit,
            "mean_profile": {str(s): row for s, row in zip(self.scales, self.profiles.mean(1).tolist(), strict=True)},
        }

    def save(self, folder: str | Path) -> dict[str, Path]:
        """attention.json (summaries), units.csv, classes.csv, profile.csv and images.csv (every image's
        mean attention difference per unit and scale, its label and whether it was classified right)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        paths = {key: folder / name for key, name in STUDY_FILES.items()}
        # Strict JSON (allow_nan=False): a value that is not finite is a bug here, not an "Infinity" written out.
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n")
        summary = self.unit_summary()
        with paths["units"].open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(summary[0]))
            writer.writeheader()
            writer.writerows(summary)
        with paths["classes"].open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["unit", "scale", *self.classes])
            for unit in self.units:
                for s, row in zip(self.scales, self.class_means(unit).tolist(), strict=True):
                    writer.writerow([unit, s, *(f"{v:.6f}" for v in row)])
        with paths["profile"].open("w", newline="") as f:
            writer = csv.writer(f)
            groups = self.profiles.shape[-1]
            writer.writerow(["unit", "scale", *[f"channels_{16 * g}_{16 * g + 15}" for g in range(groups)]])
            for s, row in zip(self.scales, self.profiles.mean(1).tolist(), strict=True):
                writer.writerow([self.profile_unit, s, *(f"{v:.6f}" for v in row)])
        with paths["images"].open("w", newline="") as f:
            writer = csv.writer(f)
            columns = [(u, i) for u in self.units for i in range(len(self.scales))]
            writer.writerow(
                ["image", "label", "class"]
                + [f"correct@{s:g}" for s in self.scales]
                + [f"{u}@{self.scales[i]:g}" for u, i in columns]
            )
            diffs = {u: self.difference[u].tolist() for u in self.units}
            correct = self.correct.int().tolist()
            for n, label in enumerate(self.labels.tolist()):
                writer.writerow(
                    [n, label, self.classes[label] if label < len(self.classes) else label]
                    + [correct[i][n] for i in range(len(self.scales))]
                    + [f"{diffs[u][i][n]:.5f}" for u, i in columns]
                )
        return paths


def _finite_or_none(value: float) -> float | None:
    """JSON's null for a mean over no images (a class absent from the images analysed)."""
    return value if math.isfinite(value) else None


def check_scales(scales: Sequence[float]) -> list[float]:
    """The scales as floats: at least two (the study compares them), finite enlargements (≥ 1), increasing
    (each once), since "grows with scale" reads them in order. ConfigError otherwise."""
    values = [float(s) for s in scales]
    bad = next((s for s in values if not (math.isfinite(s) and s >= 1.0)), None)  # not: NaN compares false
    if bad is not None:
        raise ConfigError(f"scales must be finite enlargements ≥ 1, got {bad}")
    if len(values) < 2:
        raise ConfigError(f"give at least two scales to compare (e.g. 1 1.5 2), got {len(values)}")
    if any(b <= a for a, b in itertools.pairwise(values)):
        raise ConfigError(f"give the scales in increasing order, each once, got {' '.join(f'{s:g}' for s in values)}")
    return values


def default_profile_unit(units: Sequence[str]) -> str:
    """The paper profiles SK_3_4, the last unit of the second bottleneck stage; the same position here."""
    last = last_unit_per_stage(units)
    return last[1] if len(last) > 1 else last[0]


@torch.inference_mode()
def run_scale_study(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    scales: Sequence[float] = (1.0, 1.5, 2.0),
    classes: Sequence[str] | None = None,
    units: Sequence[str] | None = None,
    profile_unit: str | None = None,
    example_indices: Sequence[int] = (),
    device: str | torch.device = "cpu",
    progress: str = "never",
    total: int | None = None,
) -> ScaleStudy:
    """Run `model` (eval mode) on every batch of normalised images at every scale and record attention.

    batches: (images (B, C, H, W), labels (B,), ...) tuples; `total` batches, for the progress display
    (`progress`: "auto", "always" or "never", see sknet.progress).
    """
    scales = check_scales(scales)
    all_units = list(sk_units(model))
    units = list(units) if units else all_units
    profile_unit = profile_unit or default_profile_unit(all_units)
    recorder = AttentionRecorder(model, dict.fromkeys([*units, profile_unit]), device="cpu")
    model.eval()
    device = torch.device(device)
    diffs: dict[str, list[list[torch.Tensor]]] = {u: [[] for _ in scales] for u in units}
    profiles: list[list[torch.Tensor]] = [[] for _ in scales]
    correct: list[list[torch.Tensor]] = [[] for _ in scales]
    labels: list[torch.Tensor] = []
    wanted = set(int(i) for i in example_indices)
    examples: dict[int, list[torch.Tensor]] = {}
    seen = 0
    num_classes = 0
    if total is None and hasattr(batches, "__len__"):
        total = len(batches)
    with Progress(total, "attention", progress) as bar:
        for batch in batches:
            x, y = batch[0], batch[1]  # folder loaders add the unreadable images they skipped
            if len(y) == 0:
                bar.update()
                continue
            labels.append(y.cpu())
            x = x.to(device)
            for i, scale in enumerate(scales):
                xs = enlarge_center(x, scale)
                with recorder:
                    logits = model(xs)
                attention = recorder.pop()
                num_classes = logits.shape[1]
                correct[i].append(logits.argmax(1).cpu() == y.cpu())
                for unit in units:
                    diffs[unit][i].append(mean_attention_difference(attention[unit]))
                profiles[i].append(channel_profile(attention[profile_unit]))
                for j in range(len(x)):
                    if seen + j in wanted:
                        examples.setdefault(seen + j, []).append(xs[j].cpu())
            seen += len(x)
            bar.update()
    if not labels:
        raise ConfigError("no images to analyse")
    label_tensor = torch.cat(labels).long()
    if classes is None:
        classes = [str(k) for k in range(max(num_classes, int(label_tensor.max()) + 1))]
    return ScaleStudy(
        scales=scales,
        units=units,
        classes=list(classes),
        labels=label_tensor,
        difference={u: torch.stack([torch.cat(d) for d in diffs[u]]) for u in units},
        profile_unit=profile_unit,
        profiles=torch.stack([torch.cat(p) for p in profiles]),
        correct=torch.stack([torch.cat(c) for c in correct]),
        examples={k: torch.stack(v) for k, v in sorted(examples.items())},
    )
