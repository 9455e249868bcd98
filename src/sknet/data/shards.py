"""WebDataset tar shards: a stream of (image, label) samples read by ranks and workers, each sample once.

A shard is a tar file of samples ``KEY.jpg`` (or .png, …: the image file's own bytes) and ``KEY.cls``
(the class index as text), read and written with the ``webdataset`` package (an optional extra:
``pip install 'sknet[wds]'``). ``info.json`` beside the shards names the classes and counts each
shard's samples (``sknet shards`` writes it; for other shards, write
``{"classes": [...], "splits": {"train": {"NAME.tar": COUNT, ...}, "val": {...}}}``).

How an epoch is read. The shards, in an order shuffled per epoch (seed, epoch) in training, form one
stream of N samples. Rank r of W takes a contiguous range of it: N/W samples, rounded up and wrapping to
the stream's start in training (padded as DistributedSampler pads), the exact share in evaluation. Its
B-sample batches are divided among the loader's K workers in contiguous blocks, so each worker opens only
the shards of its block; within a block samples are shuffled with a seeded buffer. Every sample of the
stream is read by exactly one (rank, worker) per epoch, and the order is a function of (seed, epoch).

Resume: at an epoch boundary it is exact. Mid-epoch, a run continues with exactly the batches it had not
trained (the same samples, in the same order; no sample is seen twice, none is missed): each worker reads
(without decoding) through the part of its block already trained. Random crops differ, as for folders.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from sknet.data.cores import available_cores
from sknet.data.folder import collate_skipping, unreadable
from sknet.data.images import IMAGE_EXTENSIONS, open_image
from sknet.errors import ConfigError, DataError, clip, one_line

INFO = "info.json"
SHUFFLE_BUFFER = 1000  # samples held (undecoded) by each worker to shuffle within its block
_IMAGE_KEYS = tuple(extension[1:] for extension in IMAGE_EXTENSIONS)  # a sample's image entry, as written


def require_webdataset():
    try:
        import webdataset
    except ImportError:
        raise ConfigError(
            "the wds dataset (WebDataset tar shards) needs the webdataset package: pip install 'sknet[wds]'"
        ) from None
    return webdataset


@dataclass(frozen=True)
class ShardSet:
    """One split's shards (paths or URLs, in their stored order), the samples in each, the class names."""

    urls: tuple[str, ...]
    counts: tuple[int, ...]
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return sum(self.counts)


def find_shards(data_dir: str | Path | None, split: str) -> ShardSet:
    """The shards of `split` ("train" or "test"): `data_dir` is a folder holding info.json and the shards,
    or a brace pattern of the training shards ('DIR/train-{000000..000127}.tar'; evaluation then reads
    the "val" shards listed in DIR/info.json). Every listed shard is checked before anything is trained
    (:func:`scan_shard`): DataError, one line naming the shard and the problem."""
    if data_dir is None:
        raise DataError(
            "the wds dataset needs a data folder (--data-dir on the command line): a folder of shards, or a pattern "
            "'DIR/train-{0..9}.tar'"
        )
    text = str(data_dir)
    folder = Path(text) if Path(text).is_dir() else Path(text).parent
    info_path = folder / INFO
    if not info_path.is_file():
        raise DataError(
            f"no {INFO} in {folder}: it names the classes and counts each shard's samples (`sknet shards` writes "
            'it; for other shards write {"classes": [...], "splits": {"train": {"NAME.tar": COUNT}, "val": {...}}})'
        )
    classes, splits = read_index(info_path)
    name = "train" if split == "train" else next((s for s in ("val", "validation", "test") if s in splits), "val")
    listed = splits.get(name)
    if not listed:
        raise DataError(f"{info_path} lists no {name!r} shards")
    if split == "train" and not Path(text).is_dir():
        from braceexpand import braceexpand

        wanted = [Path(p).name for p in braceexpand(Path(text).name)]
        missing = [n for n in wanted if n not in listed]
        if missing:
            raise DataError(
                f"{len(missing)} shard(s) of {text} are not listed in {info_path}: {', '.join(missing[:3])}"
            )
        listed = {n: listed[n] for n in wanted}
    absent = [n for n in listed if not (folder / n).is_file()]
    if absent:
        raise DataError(f"{len(absent)} shard(s) listed in {info_path} do not exist: {', '.join(absent[:3])}")
    for (shard, count), found in zip(
        listed.items(), scan_shards([folder / n for n in listed], len(classes)), strict=True
    ):
        if found != count:
            raise DataError(f"shard {folder / shard} holds {found} samples; {info_path} says {count}")
    return ShardSet(tuple(str(folder / n) for n in listed), tuple(listed.values()), classes)


def read_index(info_path: Path) -> tuple[tuple[str, ...], dict[str, dict[str, int]]]:
    """(class names, {split: {shard file name: samples}}) of an info.json; DataError for anything else."""
    try:
        info = json.loads(info_path.read_bytes())
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DataError(f"{info_path} is not a shard index: not JSON ({clip(err)})") from None
    classes = info.get("classes") if isinstance(info, dict) else None
    splits = info.get("splits") if isinstance(info, dict) else None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise DataError(f'{info_path} is not a shard index: "classes" must be a list of class names')
    if not isinstance(splits, dict) or not all(
        isinstance(shards, dict)
        and all(_shard_name(n) and isinstance(c, int) and not isinstance(c, bool) and c >= 0 for n, c in shards.items())
        for shards in splits.values()
    ):
        raise DataError(
            f'{info_path} is not a shard index: "splits" must map each split to {{"SHARD.tar": samples, ...}} '
            "(shard files beside it)"
        )
    return tuple(classes), splits


def _shard_name(name: object) -> bool:
    """A file name beside info.json: no folder, no way out of it."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def sample_key(name: str) -> tuple[str | None, str]:
    """(sample key, entry suffix) of a file name in a shard, as webdataset groups them: the key is the path
    up to the first dot of the file's name; None for entries it skips (metadata, names without a dot)."""
    from webdataset.tariterators import base_plus_ext, meta_prefix, meta_suffix

    metadata = "/" not in name and name.startswith(meta_prefix) and name.endswith(meta_suffix)
    if metadata or re.match(r"__[^/]*__($|/)", name):  # tar_file_iterator's skip_meta
        return None, ""
    key, suffix = base_plus_ext(name)
    return key, (suffix or "").lower()


SCAN_IN_PARALLEL = 16  # shards above which the scan runs in processes (Python's tarfile: ~0.1 s per 1000 samples)


def scan_shards(paths: list[Path], classes: int) -> list[int]:
    """:func:`scan_shard` of each path, in one process per core when there are many (DataError as its)."""
    if len(paths) <= SCAN_IN_PARALLEL:
        return [scan_shard(path, classes) for path in paths]
    from concurrent.futures import ProcessPoolExecutor

    cores = available_cores()
    with ProcessPoolExecutor(max_workers=min(cores, len(paths))) as pool:
        return list(pool.map(scan_shard, paths, [classes] * len(paths), chunksize=4))


def scan_shard(path: Path, classes: int) -> int:
    """The number of samples in the shard at `path`, read as the stream reads it (tar headers, the ``cls``
    entries; the images are not read): DataError naming the shard when it is not a tar file, is cut short,
    or holds a sample whose class is not an integer 0 … `classes` − 1."""
    samples, key, labelled = 0, None, True
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                entry, suffix = sample_key(member.name) if member.isreg() else (None, "")
                if entry is None:
                    continue
                if entry != key:
                    _labelled(labelled, path, key)
                    samples, key, labelled = samples + 1, entry, False
                if suffix == "cls":
                    label(tar.extractfile(member).read(), classes, f"{path}:{entry}")
                    labelled = True
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"shard {path} cannot be read (damaged or cut short?): {clip(err)}") from None
    _labelled(labelled, path, key)
    return samples


def _labelled(labelled: bool, path: Path, key: str | None) -> None:
    if not labelled:
        raise DataError(f"sample {one_line(path)}:{one_line(key)} has no cls entry (its class index)")


def label(value: bytes, classes: int, sample: str) -> int:
    """A sample's ``cls`` entry as its class index; DataError unless an integer 0 … `classes` − 1."""
    try:
        index = int(value.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"sample {one_line(sample)}: its class {clip(value[:20])} is not an integer") from None
    if not 0 <= index < classes:
        raise DataError(f"sample {one_line(sample)}: class {index} is outside the {classes} classes of its info.json")
    return index


def rank_range(total: int, rank: int, world_size: int, pad: bool) -> tuple[int, int]:
    """[start, stop) of `rank`'s share of a stream of `total` samples (stop may pass `total`: wrap)."""
    if pad:
        per_rank = -(-total // world_size)
        return rank * per_rank, (rank + 1) * per_rank
    base, extra = divmod(total, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def worker_blocks(batches: int, workers: int) -> list[tuple[int, int]]:
    """[first, stop) batch of each worker: contiguous blocks, the larger ones first."""
    base, extra = divmod(batches, workers)
    blocks, start = [], 0
    for w in range(workers):
        size = base + (1 if w < extra else 0)
        blocks.append((start, start + size))
        start += size
    return blocks


def schedule(blocks: list[tuple[int, int]], start_step: int, workers: int) -> list[list[tuple[int, int]]]:
    """For each worker, the (block, batch within the block) it yields, in order, so that the loader yields
    the epoch's batches from `start_step` on in the epoch's order.

    The epoch's order is PyTorch's DataLoader taking one batch from each worker (block) in turn, passing
    over those that are done. A loader started mid-epoch also begins with worker 0, so worker w yields
    every K-th batch of the rest (the lower workers never have fewer: the turns stay in step)."""
    order, done = [], [0] * len(blocks)
    sizes = [b - a for a, b in blocks]
    while len(order) < sum(sizes):
        for w, size in enumerate(sizes):
            if done[w] < size:
                order.append((w, done[w]))
                done[w] += 1
    rest = order[start_step:]
    return [rest[w::workers] for w in range(workers)]


class ShardStream(torch.utils.data.IterableDataset):
    """Batches (images uint8, labels, skipped) of this rank from a :class:`ShardSet` (see the module)."""

    def __init__(self, shards: ShardSet, transform, batch_size: int, train: bool, on_error: str = "skip",
                 seed: int = 0, rank: int = 0, world_size: int = 1, limit: int | None = None) -> None:  # fmt: skip
        self.shards, self.transform, self.batch_size, self.train = shards, transform, batch_size, train
        self.on_error, self.seed, self.rank, self.world_size = on_error, seed, rank, world_size
        self.epoch, self.start_step = 0, 0
        self.total = len(shards) if limit is None else min(limit, len(shards))  # the stream's first `limit`
        self.start, self.stop = rank_range(self.total, rank, world_size, pad=train)
        share = self.stop - self.start
        self.batches = share // batch_size if train else -(-share // batch_size)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def _order(self) -> list[int]:
        order = list(range(len(self.shards.urls)))
        if self.train:
            random.Random(self.seed * 100_003 + self.epoch).shuffle(order)
        return order

    def _raw(self, first: int, stop: int):
        """The undecoded samples at stream positions [first, stop) (wrapping past the end)."""
        from webdataset.tariterators import tarfile_samples

        order, counts = self._order(), self.shards.counts
        total, position = self.total, first
        while position < stop:
            offset, index = position % total, 0
            while offset >= counts[order[index]]:
                offset -= counts[order[index]]
                index += 1
            url = self.shards.urls[order[index]]
            take = min(stop - position, counts[order[index]] - offset)
            read = 0
            try:
                for read, sample in enumerate(tarfile_samples([{"url": url}]), start=1):
                    if read > offset:
                        yield sample
                    if read == offset + take:
                        break
            except (tarfile.TarError, OSError, EOFError, ValueError, zlib.error) as err:  # changed since checked
                reason = clip(err.args[0] if err.args else type(err).__name__)
                raise DataError(f"shard {url} cannot be read (damaged or cut short?): {reason}") from None
            if read < offset + take:
                raise DataError(f"shard {url} ended after {read} samples; its info.json counts {counts[order[index]]}")
            position += take

    def _decode(self, sample: dict):
        name = f"{sample.get('__url__', '')}:{sample['__key__']}"
        data = next((sample[k] for k in _IMAGE_KEYS if k in sample), None)
        if "cls" not in sample:  # no class: the data set is inconsistent, not one image unreadable
            raise DataError(f"sample {one_line(name)} has no cls entry (its class index)")
        target = label(sample["cls"], len(self.shards.classes), name)
        if data is None:
            return unreadable(f"sample {name} has no image", self.on_error)
        try:
            image = open_image(io.BytesIO(data), "RGB", name=name)
        except DataError as err:
            return unreadable(str(err), self.on_error)
        return self.transform(image), target

    def _block(self, blocks: list[tuple[int, int]], index: int):
        """The undecoded samples of a worker block, in their (seeded) shuffled order."""
        first, stop = blocks[index]
        b = self.batch_size
        raw = self._raw(self.start + first * b, min(self.start + stop * b, self.stop))
        if not self.train:
            return raw
        return _shuffled(
            raw, random.Random(((self.seed * 1_000_003 + self.epoch) * 1_000_003 + self.rank) * 1_000_003 + index)
        )

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        blocks = worker_blocks(self.batches, workers)
        streams, cursors = {}, {}  # per block: its sample iterator and the next batch it will give
        for block, batch in schedule(blocks, self.start_step, workers)[worker]:
            if block not in streams:
                streams[block], cursors[block] = self._block(blocks, block), 0
            for _ in range((batch - cursors[block]) * self.batch_size):
                next(streams[block])  # trained before the run was interrupted: read, not decoded
            samples = list(itertools.islice(streams[block], self.batch_size))
            cursors[block] = batch + 1
            yield collate_skipping([self._decode(sample) for sample in samples])


def _shuffled(samples, rng: random.Random, size: int = SHUFFLE_BUFFER):
    buffer: list = []
    for sample in samples:
        if len(buffer) < size:
            buffer.append(sample)
            continue
        i = rng.randrange(size)
        yield buffer[i]
        buffer[i] = sample
    rng.shuffle(buffer)
    yield from buffer


class ShardBatches:
    """A DataLoader over a :class:`ShardStream` with the other loaders' interface: `set_epoch(epoch,
    start_step)`, `len` = batches of the whole epoch (the same on every rank in training)."""

    def __init__(self, stream: ShardStream, workers: int, pin: bool) -> None:
        self.stream, self.batch_size = stream, stream.batch_size
        # Fresh workers each epoch: they copy the stream with its epoch and start.
        self.loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin)

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.stream.set_epoch(epoch, start_step)

    def __len__(self) -> int:
        return self.stream.batches

    def __iter__(self):
        return iter(self.loader)


def shard_files(out: str | Path) -> list[Path]:
    """The files of shards written to the folder `out` before (info.json, train-*.tar, val-*.tar)."""
    out = Path(out)
    return [p for p in [out / INFO, *sorted(out.glob("train-*.tar")), *sorted(out.glob("val-*.tar"))] if p.exists()]


def split_folders(root: str | Path) -> dict[str, Path]:
    """The folders `sknet shards` reads: {"train": DIR/train, "val": DIR/val (or validation, test) if there}."""
    from sknet.data.folder import VAL_NAMES, find_split_dir
    from sknet.data.split import Split

    root = Path(root)
    train = find_split_dir(root, Split.TRAIN)
    if train == root:
        raise DataError(f"{root} has no train/ folder: expected DIR/train/CLASS/*.jpg (and DIR/val/...)")
    val = next((root / name for name in VAL_NAMES if (root / name).is_dir()), None)  # optional here
    return {"train": train, **({"val": val} if val is not None else {})}


def write_shards(
    root: str | Path, out: str | Path, shard_size: int = 1000, seed: int = 0, overwrite: bool = False
) -> dict:
    """Shards of the image folder `root` (DIR/train/CLASS/*, and DIR/val/... if present) in `out`:
    train-000000.tar, …, val-000000.tar, … of `shard_size` samples (the training samples in a random order
    of `seed`, so that each shard mixes the classes) and info.json. The image files' bytes are stored as
    they are (nothing is decoded: unreadable ones are skipped when read, as in folders). Returns info.
    Shards already in `out` are refused (ConfigError) unless `overwrite`."""
    from sknet.data.folder import check_same_classes, scan_classes

    wds = require_webdataset()
    if shard_size < 1:
        raise ConfigError(f"shard size (samples per shard) must be ≥ 1, got {shard_size}")
    out = Path(out)
    if shard_files(out) and not overwrite:
        raise ConfigError(f"{out} already holds shards ({shard_files(out)[0].name}); choose another output folder")
    scanned = {name: scan_classes(folder) for name, folder in split_folders(root).items()}  # all before writing
    classes = scanned["train"][0]
    if "val" in scanned:
        check_same_classes(classes, scanned["val"][0], str(root))
    info: dict = {"classes": classes, "splits": {}}
    out.mkdir(parents=True, exist_ok=True)
    for name, (_, samples) in scanned.items():
        if name == "train":
            random.Random(seed).shuffle(samples)
        info["splits"][name] = _write_split(wds, samples, out, name, shard_size)
    (out / INFO).write_text(json.dumps(info, indent=1))
    return info


def _write_split(wds, samples: list[tuple[str, int]], out: Path, name: str, shard_size: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    for start in range(0, len(samples), shard_size):
        shard = f"{name}-{start // shard_size:06d}.tar"
        with wds.TarWriter(str(out / shard), encoder=False) as writer:
            for index, (path, label) in enumerate(samples[start : start + shard_size], start=start):
                ext = Path(path).suffix[1:].lower()
                writer.write({"__key__": f"{index:09d}", ext: Path(path).read_bytes(), "cls": str(label).encode()})
        counts[shard] = min(shard_size, len(samples) - start)
    return counts
