"""The modern training recipe's augmentations, from torchvision's ``transforms.v2``, with timm's meaning.

- ``auto_augment``: a policy named as timm names them: ``rand-m9-n2-mstd0.5`` (RandAugment, Cubuk et al.
  2020: n ops at magnitude m of 10, m drawn per image from N(m, mstd²) when mstd is given), ``trivial``
  (TrivialAugmentWide), ``imagenet`` / ``cifar10`` / ``svhn`` (AutoAugment's learned policies). The ops are
  torchvision's (the papers'); timm's RandAugment uses a variant op set and draws the magnitude noise per op,
  torchvision's transform applies one magnitude to the ops of a call, so here it is drawn per image.
- ``random_erase``: torchvision's RandomErasing (Zhong et al. 2020) with its default area 2–33 % and aspect
  0.3–3.3, per image, filled with per-pixel normal noise after normalisation (timm's default ``pixel`` mode).
- ``mixup`` / ``cutmix``: torchvision's MixUp / CutMix, one of them per batch (CutMix with probability
  ``switch_prob`` when both are on, as timm's Mixup), applied with probability ``prob``; targets are the
  label-smoothed one-hots, mixed (timm's ``Mixup(label_smoothing=)``), so each row sums to 1.

Every random draw here is a function of a key (seed, epoch, step, rank): a run resumed mid-epoch repeats
them exactly. The draws are made from torch's CPU generator, forked and seeded from the key, so they
neither consume nor depend on the global random stream (dropout, drop path).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from sknet.errors import ConfigError

AUTO_AUGMENT_POLICIES = ("imagenet", "cifar10", "svhn")  # AutoAugment's (torchvision's AutoAugmentPolicy)
_RAND = re.compile(r"^rand(?P<parts>(-[a-z]+[0-9.]+)*)$")
_RAND_PART = re.compile(r"^(?P<key>m|n|mstd)(?P<value>[0-9]+(\.[0-9]+)?)$")
AUTO_AUGMENT_HELP = "rand-mM[-nN][-mstdS] (RandAugment, e.g. rand-m9-mstd0.5), trivial, imagenet, cifar10 or svhn"
MAX_MAGNITUDE = 10  # timm's and the RandAugment paper's magnitude scale: 0..10


@dataclass(frozen=True)
class AutoAugmentPolicy:
    """A parsed policy: `kind` "rand", "trivial" or one of AUTO_AUGMENT_POLICIES; RandAugment's n ops at
    magnitude m (0–10) with per-image noise std mstd."""

    kind: str
    num_ops: int = 2
    magnitude: float = 9.0
    magnitude_std: float = 0.0


def parse_auto_augment(text: str) -> AutoAugmentPolicy:
    """timm's policy string → :class:`AutoAugmentPolicy`; ConfigError naming the problem otherwise."""
    bad = ConfigError(f"auto_augment must be {AUTO_AUGMENT_HELP}, got {text!r}")
    if not isinstance(text, str):
        raise bad
    if text == "trivial" or text in AUTO_AUGMENT_POLICIES:
        return AutoAugmentPolicy(text)
    match = _RAND.match(text)
    if match is None:
        raise bad
    values: dict[str, float] = {}
    for part in filter(None, match["parts"].split("-")):
        item = _RAND_PART.match(part)
        if item is None or item["key"] in values:
            raise bad
        values[item["key"]] = float(item["value"])
    if "m" not in values or values["m"] > MAX_MAGNITUDE or not float(values.get("n", 2)).is_integer():
        raise bad
    return AutoAugmentPolicy("rand", int(values.get("n", 2)), values["m"], values.get("mstd", 0.0))


def is_auto_augment(text: object) -> bool:
    """Whether `text` is a policy :func:`parse_auto_augment` reads (the configuration's check)."""
    try:
        parse_auto_augment(text)  # type: ignore[arg-type]
    except ConfigError:
        return False
    return True


def auto_augment_transform(policy: AutoAugmentPolicy, magnitude: float | None = None):
    """The torchvision v2 transform of `policy` (uint8 (C, H, W) → same); `magnitude` overrides RandAugment's."""
    from torchvision.transforms import v2

    if policy.kind == "trivial":
        return v2.TrivialAugmentWide()
    if policy.kind in AUTO_AUGMENT_POLICIES:
        return v2.AutoAugment(v2.AutoAugmentPolicy(policy.kind))
    m = policy.magnitude if magnitude is None else magnitude
    # 101 bins over [0, max]: bin round(10·m) is m/10 of each op's maximum, timm's scale, in steps of 0.1.
    return v2.RandAugment(policy.num_ops, round(m * 10), num_magnitude_bins=10 * MAX_MAGNITUDE + 1)


class RandomAugment:
    """One auto-augment policy applied to every image of a batch, independently (a different op draw per
    image). Folder data apply :meth:`transform` per sample in the loader workers instead."""

    def __init__(self, policy: str) -> None:
        self.policy = parse_auto_augment(policy)
        self.transform = auto_augment_transform(self.policy)

    def one(self, image: torch.Tensor) -> torch.Tensor:
        if self.policy.magnitude_std > 0:  # the draw comes from torch's (keyed) generator, like the ops'
            noisy = torch.normal(self.policy.magnitude, self.policy.magnitude_std, ()).clamp(0, MAX_MAGNITUDE)
            self.transform.magnitude = round(float(noisy) * 10)
        return self.transform(image)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, H, W) → uint8 (N, C, H, W)."""
        return torch.stack([self.one(image) for image in images])


class RandomErase:
    """torchvision's RandomErasing with probability `p`, per image of a normalised float (N, C, H, W) batch."""

    def __init__(self, p: float) -> None:
        from torchvision.transforms import v2

        self.transform = v2.RandomErasing(p, value="random")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.transform(image) for image in x]).contiguous(memory_format=_format(x))


def _format(x: torch.Tensor) -> torch.memory_format:
    return (
        torch.channels_last
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )


class MixCut:
    """MixUp (alpha `mixup`) or CutMix (alpha `cutmix`) of a batch, with label-smoothed soft targets.

    (x (N, C, H, W) float, labels (N,) int64) → (mixed x, targets (N, classes) float32, rows summing to 1).
    An alpha of 0 turns that one off; with both on, CutMix is chosen with probability `switch_prob`; the batch
    is mixed at all with probability `prob` (otherwise the targets are the smoothed one-hots).
    """

    def __init__(
        self, classes: int, mixup: float, cutmix: float, prob: float, switch_prob: float, label_smoothing: float
    ) -> None:
        from torchvision.transforms import v2

        if mixup <= 0 and cutmix <= 0:
            raise ValueError("MixCut needs mixup > 0 or cutmix > 0")
        self.classes, self.prob, self.smoothing = classes, prob, label_smoothing
        self.mixup = v2.MixUp(alpha=mixup) if mixup > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix) if cutmix > 0 else None
        self.switch_prob = switch_prob if self.mixup and self.cutmix else float(self.cutmix is not None)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Label-smoothed one-hots (N, classes): 1 − ε + ε/K on the label, ε/K elsewhere."""
        one_hot = torch.nn.functional.one_hot(labels, self.classes).float()
        return one_hot * (1.0 - self.smoothing) + self.smoothing / self.classes

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        targets = self.targets(labels)
        if self.prob < 1 and float(torch.rand(())) >= self.prob:
            return x, targets
        mix = self.cutmix if float(torch.rand(())) < self.switch_prob else self.mixup
        mixed, targets = mix(x, targets)
        return mixed.contiguous(memory_format=_format(x)), targets


def repeat_order(order: torch.Tensor, repeats: int) -> torch.Tensor:
    """Repeated augmentation (Hoffer et al. 2020; Berman et al. 2019; timm's RepeatAugSampler): each index
    of an epoch's order `repeats` times in a row, cut back to the epoch's length. Taken every world_size-th
    by the ranks, the copies of an image land on different ranks (different augmentations of it in one
    step); an epoch then sees len/repeats distinct images. `repeats` ≤ 1: the order as it is."""
    if repeats <= 1:
        return order
    return order.repeat_interleave(repeats)[: len(order)]


def key_seed(*keys: int) -> int:
    """A stable 63-bit seed from integer keys (Python's hash of ints is not stable across types)."""
    seed = 0
    for key in keys:
        seed = (seed * 1_000_003 + int(key) + 0x9E3779B9) % (2**63 - 1)
    return seed


@contextlib.contextmanager
def keyed_rng(*keys: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded from `keys`, then restore it (the CUDA generators are
    left alone: torch.manual_seed would reseed them too)."""
    state = torch.get_rng_state()
    torch.default_generator.manual_seed(key_seed(*keys))
    try:
        yield
    finally:
        torch.set_rng_state(state)


class BatchAugment:
    """The per-batch stages on the device: auto-augment (uint8, before normalisation) and random erasing
    (after it), each batch under its own key (seed, epoch, step, rank) for exact resume."""

    def __init__(self, seed: int, rank: int, auto_augment: str | None = None, random_erase: float = 0.0) -> None:
        self.seed, self.rank = seed, rank
        self.auto_augment = RandomAugment(auto_augment) if auto_augment else None
        self.random_erase = RandomErase(random_erase) if random_erase > 0 else None

    def before(self, images: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        if self.auto_augment is None:
            return images
        with keyed_rng(self.seed, epoch, step, self.rank, 1):
            return self.auto_augment(images)

    def after(self, x: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        if self.random_erase is None:
            return x
        with keyed_rng(self.seed, epoch, step, self.rank, 2):
            return self.random_erase(x)
