import pytest
import torch
from PIL import Image

from sknet.data.datasets import Split
from sknet.data.folder import ImageFolderDataset, ShardedSampler, collate_skipping, find_split_dir
from sknet.data.transforms import eval_transform
from sknet.errors import DataError


def _tree(root, corrupt=True):
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (40, 30), (i * 40, 100, 200)).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "cat" / "bad.jpg").write_bytes(b"not an image at all")
    return root


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = _tree(tmp_path)
    ds = ImageFolderDataset(find_split_dir(root, Split.TRAIN), eval_transform(32, (0.5,) * 3, (0.5,) * 3))
    with pytest.warns(UserWarning, match="bad.jpg"):
        images, labels, skipped = collate_skipping([ds[i] for i in range(len(ds))])
    assert skipped == 1 and images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_unreadable_image_raises_naming_the_file_when_asked(tmp_path):
    root = _tree(tmp_path)
    ds = ImageFolderDataset(root / "train", eval_transform(32, (0.5,) * 3, (0.5,) * 3), on_error="raise")
    with pytest.raises(DataError, match=r"unreadable image.*bad\.jpg"):
        [ds[i] for i in range(len(ds))]


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_split_dir(tmp_path / "nowhere", Split.TRAIN)
    with pytest.raises(DataError, match="needs --data-dir"):
        find_split_dir(None, Split.TRAIN)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no images in .*no class sub-folders"):
        ImageFolderDataset(tmp_path / "empty", lambda x: x)
    for name in ("a", *(f"empty{i}" for i in range(5))):
        (tmp_path / "empty" / name).mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "empty" / "a" / "x.jpg")
    with pytest.raises(DataError) as err:  # one short line, not every class name
        ImageFolderDataset(tmp_path / "empty", lambda x: x)
    assert "no images in 5 of the 6 class folders" in str(err.value) and "and 2 more" in str(err.value)
    assert "\n" not in str(err.value) and len(str(err.value)) < 300


def test_sharded_sampler_partitions_and_resumes():
    parts = [ShardedSampler(10, True, seed=1, rank=r, world_size=3) for r in range(3)]
    for p in parts:
        p.set_epoch(2)
    indices = [list(p) for p in parts]
    everything = [i for part in indices for i in part]
    assert sorted(everything) == sorted([*range(10), indices[0][0], indices[1][0]])  # padded by 2
    parts[0].set_epoch(2, start=2)
    assert list(parts[0]) == indices[0][2:]
    assert len(torch.utils.data.DataLoader(list(range(10)), sampler=parts[0])) == 2


def test_symbolic_links_are_followed_but_a_loop_is_walked_once(tmp_path):
    import os

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.png")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a/loop → the root: a cycle
    shared = tmp_path.parent / f"{tmp_path.name}-shared"
    shared.mkdir()
    Image.new("RGB", (8, 8)).save(shared / "y.png")
    os.symlink(shared, tmp_path / "b" / "more")  # a linked folder of images is used
    ds = ImageFolderDataset(tmp_path, lambda x: x)
    assert ds.classes == ["a", "b"]
    # Class a: a/x.png, then through a/loop the root's b (a is not entered again): b/x.png, b/more/y.png.
    # Class b: b/x.png and, through the link, y.png. Finite, each directory once per class.
    assert sorted((os.path.basename(p), label) for p, label in ds.samples) == [
        ("x.png", 0),
        ("x.png", 0),
        ("x.png", 1),
        ("y.png", 0),
        ("y.png", 1),
    ]
