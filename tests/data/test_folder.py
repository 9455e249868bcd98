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
    assert len(skipped) == 1 and "bad.jpg" in skipped[0]
    assert images.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_unreadable_image_raises_naming_the_file_when_asked(tmp_path):
    root = _tree(tmp_path)
    ds = ImageFolderDataset(root / "train", eval_transform(32, (0.5,) * 3, (0.5,) * 3), on_error="raise")
    with pytest.raises(DataError, match=r"unreadable image.*bad\.jpg"):
        [ds[i] for i in range(len(ds))]


def test_missing_and_empty_directories(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        find_split_dir(tmp_path / "nowhere", Split.TRAIN)
    with pytest.raises(DataError, match="needs a data folder DIR"):
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


def test_symbolic_links_never_repeat_or_relabel_an_image(tmp_path):
    import os

    for c in ("a", "b", "c"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / c / "x.png")
    os.symlink(tmp_path, tmp_path / "a" / "loop")  # a/loop → the root: a cycle, and every class under a
    os.symlink(tmp_path / "a", tmp_path / "b" / "to_a")  # b/to_a → another class (walked before)
    os.symlink(tmp_path / "c", tmp_path / "b" / "to_c")  # b/to_c → another class (walked after)
    os.symlink(tmp_path / "a" / "x.png", tmp_path / "c" / "x_of_a.png")  # a file of another class
    shared = tmp_path.parent / f"{tmp_path.name}-shared"
    shared.mkdir()
    Image.new("RGB", (8, 8)).save(shared / "y.png")
    os.symlink(shared, tmp_path / "b" / "more")  # a linked folder of images outside the root is used
    os.symlink(shared, tmp_path / "c" / "again")  # ... once
    with pytest.warns(UserWarning, match=r"skipped 5 symbolic link\(s\).*a/loop \(→ the data root") as caught:
        ds = ImageFolderDataset(tmp_path, lambda x: x)
    assert len([w for w in caught if "symbolic link" in str(w.message)]) == 1  # one warning for them all
    assert ds.classes == ["a", "b", "c"]
    labels = sorted((os.path.relpath(p, tmp_path), label) for p, label in ds.samples)
    assert labels == [("a/x.png", 0), ("b/more/y.png", 1), ("b/x.png", 1), ("c/x.png", 2)]
    # No real file twice:
    assert len({os.path.realpath(p) for p, _ in ds.samples}) == len(ds.samples)


def _classes(root, names, files=2, kind="png"):
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(files):
            Image.new("RGB", (10, 10), (40 * k, 10 * i, 0)).save(root / name / f"{i}.{kind}")


def _train_argv(tmp_path) -> list[str]:
    """sknet train on the image folder tmp_path/data, tiny, into tmp_path/run."""
    data, run = str(tmp_path / "data"), str(tmp_path / "run")
    tiny = ["--image-size", "8", "--batch-size", "2", "--workers", "0"]
    return ["train", "--dataset", "imagefolder", "--data-dir", data, *tiny, "--output", run]


def test_train_and_test_classes_that_differ_are_named_as_a_data_problem(tmp_path, capsys):
    """Was: exit 2 (usage) and "differ" without the classes."""
    from sknet.cli import main

    _classes(tmp_path / "data" / "train", ["cat", "dog", "owl"])
    _classes(tmp_path / "data" / "val", ["cat", "dog", "yak"])
    assert main(_train_argv(tmp_path)) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(only in training: owl; only in test: yak)" in err, err
    assert not (tmp_path / "run").exists()


def test_a_class_without_one_readable_image_is_refused_naming_it(tmp_path, capsys):
    """Was: such a class trained with zero images, without a word."""
    from sknet.cli import main

    _classes(tmp_path / "data" / "train", ["cat", "dog"])
    _classes(tmp_path / "data" / "val", ["cat", "dog", "owl"])
    for i in range(3):
        (tmp_path / "data" / "train" / "owl").mkdir(exist_ok=True)
        (tmp_path / "data" / "train" / "owl" / f"{i}.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"no readable image in 1 of the 3 class folders .*'owl' \(3 files, e\.g\. "):
        ImageFolderDataset(tmp_path / "data" / "train", lambda image: image)
    assert main(_train_argv(tmp_path)) == 3
    assert "'owl' (3 files" in capsys.readouterr().err
    (tmp_path / "data" / "train" / "owl" / "ok.png").write_bytes(
        (tmp_path / "data" / "train" / "cat" / "0.png").read_bytes()
    )
    assert len(ImageFolderDataset(tmp_path / "data" / "train", lambda image: image)) == 8  # one readable: enough


def test_gif_images_are_read_in_folders_as_predict_reads_them(tmp_path):
    """Was: .gif files were left out of folders and shards without a word, while predict took them."""
    _classes(tmp_path, ["cat", "dog"], kind="gif")
    dataset = ImageFolderDataset(tmp_path, lambda image: image.size)
    assert len(dataset) == 4 and dataset[0] == ((10, 10), 0)


@pytest.mark.parametrize(("present", "split"), [("train", Split.TEST), ("val", Split.TRAIN)])
def test_a_split_tree_missing_a_split_says_so(tmp_path, present, split):
    """DIR/train without DIR/val was read as class folders (one class named 'train'), refused late with a
    message about differing classes or a batch larger than the data."""
    from sknet.data.folder import find_split_dir

    (tmp_path / present / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match=r"has no (train|val).* folder"):
        find_split_dir(tmp_path, split)
    assert find_split_dir(tmp_path / present, split) == tmp_path / present  # class folders alone: themselves
