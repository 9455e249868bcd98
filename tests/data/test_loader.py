import gzip

import pytest
import torch

from sknet.data.datasets import Split, load_fashion_mnist, make_synthetic
from sknet.data.idx import read_idx
from sknet.data.tensors import TensorBatchLoader, random_crop_flip
from sknet.errors import DataError


def _loader(data, **kw):
    return TensorBatchLoader(data, shuffle=True, augment=random_crop_flip(2), seed=5, **kw)


def test_two_ranks_together_see_exactly_one_process_batches():
    data = make_synthetic(Split.TRAIN, count=50)
    single = _loader(data, batch_size=8)
    ranks = [_loader(data, batch_size=4, rank=r, world_size=2) for r in range(2)]
    for loader in (single, *ranks):
        loader.set_epoch(3)
    for (x, y), (x0, y0), (x1, y1) in zip(single, *ranks, strict=False):
        torch.testing.assert_close(x[0::2], x0)
        torch.testing.assert_close(x[1::2], x1)
        assert torch.equal(y[0::2], y0) and torch.equal(y[1::2], y1)


def test_start_step_resumes_the_same_batches_and_epochs_differ():
    data = make_synthetic(Split.TRAIN, count=40)
    loader = _loader(data, batch_size=8)
    loader.set_epoch(1)
    full = list(loader)
    loader.set_epoch(1, start_step=2)
    tail = list(loader)
    assert len(tail) == len(full) - 2
    for (a, _), (b, _) in zip(full[2:], tail, strict=True):
        torch.testing.assert_close(a, b)
    loader.set_epoch(2)
    assert not torch.equal(next(iter(loader))[0], full[0][0])


def test_unpadded_eval_sharding_covers_every_sample_once():
    data = make_synthetic(Split.TEST, count=37)
    seen = []
    for rank in range(3):
        loader = TensorBatchLoader(data, 5, rank=rank, world_size=3, pad=False)
        seen += [y for _, y in loader]
        assert len(list(loader)) == len(loader)
    assert sum(len(y) for y in seen) == 37


def test_random_crop_flip_shapes_and_identity_without_randomness():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = random_crop_flip(2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    same = random_crop_flip(0, flip=False)(x, torch.Generator().manual_seed(0))
    assert torch.equal(same, x)


def _write_idx(path, array_bytes, dims, code=0x08):
    header = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    path.write_bytes(gzip.compress(header + array_bytes))


def test_idx_reader_and_clear_errors(tmp_path):
    good = tmp_path / "good-idx1-ubyte.gz"
    _write_idx(good, bytes(range(6)), (6,))
    assert read_idx(good).tolist() == list(range(6))
    short = tmp_path / "short-idx1-ubyte.gz"
    _write_idx(short, bytes(range(5)), (6,))
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(short)
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc")[:-6])
    with pytest.raises(DataError, match="corrupt or truncated"):
        read_idx(broken)
    with pytest.raises(DataError, match="missing data file"):
        read_idx(tmp_path / "nope.gz")


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as info:
        load_fashion_mnist(tmp_path, Split.TRAIN)
    assert str(tmp_path) in str(info.value) and "--download" in str(info.value)


def test_fashion_mnist_from_a_folder_of_idx_files(tmp_path):
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", bytes(3 * 28 * 28), (3, 28, 28))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", bytes([1, 2, 3]), (3,))
    data = load_fashion_mnist(tmp_path, Split.TRAIN)
    assert data.images.shape == (3, 1, 28, 28) and data.labels.tolist() == [1, 2, 3]
    assert data.classes[9] == "Ankle boot"


@pytest.mark.parametrize(("world_size", "repeats"), [(1, 1), (2, 1), (3, 3)])
def test_tensors_and_decoded_images_visit_one_order(world_size, repeats):
    """Data held as tensors and decoded data (image folders, any Dataset) take each epoch's order and each
    rank's share from one function: the same samples, in the same order, for every rank."""
    from sknet.data.folder import ShardedSampler
    from sknet.data.tensors import InMemoryImages

    size, batch = 23, 4
    labels = torch.arange(size)  # label i on sample i: the loader's labels are its indices
    data = InMemoryImages(torch.zeros(size, 1, 2, 2, dtype=torch.uint8), labels, ["c"] * size, (0.5,), (0.5,))
    for rank in range(world_size):
        loader = TensorBatchLoader(data, batch, shuffle=True, seed=7, rank=rank, world_size=world_size, repeats=repeats)
        sampler = ShardedSampler(size, True, seed=7, rank=rank, world_size=world_size, repeats=repeats)
        for epoch in (0, 3):
            loader.set_epoch(epoch)
            sampler.set_epoch(epoch)
            assert torch.cat([y for _, y in loader]).tolist() == list(sampler)
