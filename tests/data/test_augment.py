"""The recipe's augmentations against the torchvision transforms they come from (sknet.data.augment)."""

import pytest
import torch
from torchvision.transforms import v2

from sknet.data.augment import (
    BatchAugment,
    MixCut,
    RandomAugment,
    auto_augment_transform,
    keyed_rng,
    parse_auto_augment,
)
from sknet.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "kind", "ops", "magnitude", "std"),
    [
        ("rand-m9-mstd0.5", "rand", 2, 9.0, 0.5),
        ("rand-m7-n3", "rand", 3, 7.0, 0.0),
        ("rand-n1-m10", "rand", 1, 10.0, 0.0),
        ("trivial", "trivial", 2, 9.0, 0.0),
        ("imagenet", "imagenet", 2, 9.0, 0.0),
    ],
)
def test_timm_policy_names_parse(text, kind, ops, magnitude, std):
    policy = parse_auto_augment(text)
    assert (policy.kind, policy.num_ops, policy.magnitude, policy.magnitude_std) == (kind, ops, magnitude, std)


@pytest.mark.parametrize("text", ["rand", "rand-n2", "rand-m11", "rand-m9-x1", "rand-m9-m8", "rand-m9-n1.5", "v2", ""])
def test_bad_policies_are_one_clear_error(text):
    with pytest.raises(ConfigError, match=r"^auto_augment must be rand-mM.*, got "):
        parse_auto_augment(text)


def test_policies_are_torchvisions_transforms_at_timms_magnitude_scale():
    assert isinstance(auto_augment_transform(parse_auto_augment("trivial")), v2.TrivialAugmentWide)
    auto = auto_augment_transform(parse_auto_augment("cifar10"))
    assert isinstance(auto, v2.AutoAugment) and auto.policy is v2.AutoAugmentPolicy.CIFAR10
    rand = auto_augment_transform(parse_auto_augment("rand-m9-n3"))
    assert isinstance(rand, v2.RandAugment) and rand.num_ops == 3
    # timm's m9 is 9/10 of each op's range (its _LEVEL_DENOM = 10): rotation 27° of 30°, shear 0.27 of 0.3.
    space = rand._AUGMENTATION_SPACE
    assert float(space["Rotate"][0](rand.num_magnitude_bins, 28, 28)[rand.magnitude]) == pytest.approx(27.0)
    assert float(space["ShearX"][0](rand.num_magnitude_bins, 28, 28)[rand.magnitude]) == pytest.approx(0.27)


def test_each_image_gets_its_own_draw_equal_to_torchvision_per_image():
    images = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)
    augment = RandomAugment("rand-m9-n2")
    with keyed_rng(5):
        ours = augment(images)
    reference = v2.RandAugment(2, 90, num_magnitude_bins=101)
    with keyed_rng(5):
        theirs = torch.stack([reference(image) for image in images])
    assert torch.equal(ours, theirs) and ours.dtype == torch.uint8
    same = torch.full((16, 1, 28, 28), 0, dtype=torch.uint8)
    same[:, :, 5:20, 8:14] = 200
    with keyed_rng(1):
        out = augment(same)
    assert len({bytes(o.numpy()) for o in out}) > 8, "a different op draw per image"


def test_magnitude_noise_is_drawn_per_image_around_m():
    augment = RandomAugment("rand-m5-mstd2")
    seen = []
    with keyed_rng(0):
        for _ in range(200):
            augment.one(torch.zeros(1, 8, 8, dtype=torch.uint8))
            seen.append(augment.transform.magnitude / 10)
    seen = torch.tensor(seen)
    assert seen.min() >= 0 and seen.max() <= 10 and seen.unique().numel() > 10
    assert seen.mean().item() == pytest.approx(5.0, abs=0.5)


def test_keyed_stages_repeat_and_leave_the_global_stream_alone():
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    stages = BatchAugment(seed=3, rank=0, auto_augment="trivial", random_erase=0.5)
    state = torch.get_rng_state()
    a = stages.after(stages.before(images, 1, 7).float(), 1, 7)
    assert torch.equal(torch.get_rng_state(), state)
    b = stages.after(stages.before(images, 1, 7).float(), 1, 7)
    c = stages.after(stages.before(images, 1, 8).float(), 1, 8)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_erasing_is_torchvisions_per_image():
    x = torch.randn(32, 3, 24, 24)
    with keyed_rng(2):
        ours = BatchAugment(0, 0, random_erase=1.0).random_erase(x)
    reference = v2.RandomErasing(1.0, value="random")
    with keyed_rng(2):
        theirs = torch.stack([reference(image) for image in x])
    assert torch.equal(ours, theirs)
    erased = (ours != x).flatten(1).float().mean(1)  # p = 1: every image has a rectangle of 2–33 % replaced
    assert bool((erased > 0.015).all()) and bool((erased < 0.34).all())


def smoothed(labels, classes, eps):
    return torch.nn.functional.one_hot(labels, classes).float() * (1 - eps) + eps / classes


def test_mixup_targets_sum_to_one_and_match_the_mixing_weight():
    x, labels = torch.randn(64, 3, 8, 8), torch.randint(0, 10, (64,))
    mix = MixCut(10, mixup=0.4, cutmix=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.1)
    with keyed_rng(9):
        mixed, targets = mix(x, labels)
    assert torch.allclose(targets.sum(1), torch.ones(64))
    # x' = λ x + (1 − λ) roll(x): λ from the images, then the targets must carry the same λ.
    lam = ((mixed - x.roll(1, 0)) / (x - x.roll(1, 0))).median().item()
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.roll(1, 0), rtol=1e-4, atol=1e-5)
    want = lam * smoothed(labels, 10, 0.1) + (1 - lam) * smoothed(labels.roll(1, 0), 10, 0.1)
    torch.testing.assert_close(targets, want, rtol=1e-4, atol=1e-5)
    reference = v2.MixUp(alpha=0.4)  # the library itself, same draw
    with keyed_rng(9):
        torch.rand(())  # MixCut's switch draw
        theirs = reference(x, smoothed(labels, 10, 0.1))
    assert torch.equal(mixed, theirs[0]) and torch.equal(targets, theirs[1])


def test_cutmix_targets_match_the_pasted_area():
    x, labels = torch.randn(32, 3, 16, 16), torch.randint(0, 5, (32,))
    mix = MixCut(5, mixup=0.0, cutmix=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0)
    for key in range(5):
        with keyed_rng(key):
            mixed, targets = mix(x, labels)
        pasted = (mixed == x.roll(1, 0)) & (mixed != x)
        area = pasted[0, 0].float().mean().item()  # one box for the batch
        assert torch.equal(pasted, pasted[:1].expand_as(pasted))
        want = (1 - area) * smoothed(labels, 5, 0) + area * smoothed(labels.roll(1, 0), 5, 0)
        torch.testing.assert_close(targets, want, rtol=0, atol=1e-6)
        assert torch.allclose(targets.sum(1), torch.ones(32))


def test_switch_and_apply_probabilities():
    x, labels = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    both = MixCut(3, mixup=1.0, cutmix=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0)
    kinds = []
    for key in range(200):
        with keyed_rng(key):
            mixed, _ = both(x, labels)
        blended = ((mixed != x) & (mixed != x.roll(1, 0))).any().item()
        kinds.append("mixup" if blended else "cutmix")
    assert 70 < kinds.count("cutmix") < 130  # switch probability 0.5 over 200 batches (±4.2σ)
    never = MixCut(3, mixup=1.0, cutmix=0.0, prob=0.0, switch_prob=0.5, label_smoothing=0.2)
    out, targets = never(x, labels)
    assert torch.equal(out, x) and torch.equal(targets, smoothed(labels, 3, 0.2))


def test_folder_data_get_auto_augment_in_the_workers_and_erasing_on_the_device(tmp_path):
    from PIL import Image

    from sknet.data.loader import LoaderOptions, build_loader

    for cls in ("cat", "dog"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (40, 30), (i * 40, 100, 200)).save(tmp_path / "train" / cls / f"{i}.png")
    options = LoaderOptions(4, train=True, image_size=16, workers=0, auto_augment="trivial", random_erase=1.0)
    loader = build_loader("imagefolder", "train", options, "cpu", tmp_path)
    assert loader.augment is not None and loader.augment.auto_augment is None  # not twice
    steps = loader.loader.loader.dataset.transform.transforms
    assert any(getattr(step, "__self__", None).__class__ is RandomAugment for step in steps)
    x, y, _ = next(iter(loader))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.shape == (4,)


def test_repeated_augmentation_puts_the_copies_of_an_image_on_different_ranks():
    from sknet.data.augment import repeat_order
    from sknet.data.folder import ShardedSampler
    from sknet.data.tensors import InMemoryImages, TensorBatchLoader, random_crop_flip

    assert repeat_order(torch.arange(6), 3).tolist() == [0, 0, 0, 1, 1, 1]
    assert repeat_order(torch.arange(6), 1).tolist() == list(range(6))
    images = torch.randint(0, 256, (30, 1, 8, 8), dtype=torch.uint8)
    data = InMemoryImages(images, torch.arange(30), [str(i) for i in range(30)], (0.5,), (0.5,))
    ranks = [
        list(TensorBatchLoader(data, 2, True, True, random_crop_flip(2), seed=1, rank=r, world_size=3, repeats=3))
        for r in range(3)
    ]
    assert len(ranks[0]) == 5  # the epoch keeps its length: 30 samples over 3 ranks, batches of 2
    for step in range(5):
        labels = [ranks[r][step][1] for r in range(3)]
        assert torch.equal(labels[0], labels[1]) and torch.equal(labels[1], labels[2])  # the same images...
        pixels = [ranks[r][step][0] for r in range(3)]
        assert not (torch.equal(pixels[0], pixels[1]) and torch.equal(pixels[1], pixels[2]))  # ...augmented apart
    seen = torch.cat([batch[1] for batch in ranks[0]])
    assert seen.unique().numel() == 10  # an epoch sees 30 / 3 distinct images
    samplers = [list(ShardedSampler(30, True, seed=1, rank=r, world_size=3, repeats=3)) for r in range(3)]
    assert samplers[0] == samplers[1] == samplers[2] and len(set(samplers[0])) == 10
