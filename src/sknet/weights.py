"""Weights, checkpoints and what they record about their input: everything sknet reads and writes.

This module only reads and writes files; it depends on nothing in sknet but :mod:`sknet.errors` and the
preprocessing record it validates (:mod:`sknet.data.config`): the model registry, training, the command
line and the exporters all read and write weights through it.

- Training checkpoints (``.pt``) are written atomically: to a temporary file in the same folder, flushed
  and fsync'ed, then renamed over the target, so a crash never leaves a half-written checkpoint. Each has
  a SHA-256 sidecar (``checkpoint.pt.sha256``) and the one it replaces is kept as ``checkpoint.prev.pt``:
  resuming from a file that fails its checksum or does not load falls back to the previous one, with a
  warning. They are read with ``torch.load(weights_only=True)``: a file that needs code execution is refused.
- Weights (``.safetensors``) hold the model's tensors plus metadata (model name and options, and the
  :class:`~sknet.data.config.DataConfig`: input size, crop, interpolation, mean/std, classes, channel order), enough for
  ``create_model(weights=path)``, ``sknet eval``, ``sknet predict`` and the exports.
- Tensors must be finite: a weights file or checkpoint holding NaN or inf in any floating tensor is
  refused in one line naming the first such tensor (checked tensor by tensor as the file is read).
- Metadata comes from files that may be hostile: it is validated (types, sane ranges, consistency)
  before anything is sized from it, and a file whose metadata fails is refused in one line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sknet.data.config import check_record
from sknet.errors import CheckpointError, one_line

# The files of a training run's folder (sknet train writes them; a folder holding any of them holds a run,
# which no other command, nor save_pretrained, writes into: sknet.train.run_folder, sknet.publish).
RUN_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "checkpoint.prev.pt",
    "model.safetensors",
    "metrics.jsonl",
    "metrics.csv",
    "steps.jsonl",
    "summary.json",
    "curves.png",
    "skipped_images.txt",
)


def first_non_finite(tensors) -> str | None:
    """The name of the first floating tensor of `tensors` (an iterable of (name, tensor)) holding NaN or
    inf, else None. One host read for all of them (a device flag per tensor, stacked), so it costs a
    training checkpoint one sync."""
    named = [(k, t) for k, t in tensors if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())]
    if not named:
        return None
    flags = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu()
    if bool(flags.all()):
        return None
    return named[int((~flags).nonzero()[0])][0]


def check_state_dict(state: dict, source: str) -> None:
    """CheckpointError unless `state` maps names to finite tensors (a damaged file can hold anything)."""
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise CheckpointError(f"{source} is corrupt: its state dict holds entries that are not named tensors")
    check_finite(state.items(), source)


def check_finite(tensors, source: str) -> None:
    """CheckpointError naming the first tensor of `tensors` that is not finite (see first_non_finite)."""
    bad = first_non_finite(tensors)
    if bad is not None:
        raise CheckpointError(
            f"{source}: tensor {one_line(bad)!r} holds NaN or infinite values; the weights are broken"
        )


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(file_object)`` on a temporary file beside `path`, then atomically rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; results get the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def digest_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def previous_path(path: Path) -> Path:
    """checkpoint.pt → checkpoint.prev.pt: the checkpoint a save replaced."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: str | Path, state: dict[str, Any], keep_previous: bool = True) -> None:
    """Write `state` atomically with its SHA-256 sidecar; the replaced checkpoint becomes checkpoint.prev.pt.

    `path` exists at every moment once it has been written: the old file is linked (or, where the file
    system has no hard links, copied) to checkpoint.prev.pt, then the new one is renamed over it. Whatever
    moment a crash hits, `path` is complete (checksum matching, or a complete file whose checksum was not
    yet written) and the previous checkpoint is intact.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    if keep_previous and path.is_file():
        prev = previous_path(path)
        _link_over(path, prev)
        if digest_path(path).is_file():
            _link_over(digest_path(path), digest_path(prev))
        else:
            digest_path(prev).unlink(missing_ok=True)
    digest_path(path).unlink(missing_ok=True)  # the old checksum must not stand beside the new file
    atomic_write(path, lambda f: f.write(data))
    atomic_write(digest_path(path), lambda f: f.write(f"{digest}  {path.name}\n".encode()))


def _link_over(source: Path, target: Path) -> None:
    """Make `target` a second name of `source` (a copy where hard links fail), replacing it atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (some network and FAT file systems): a copy does the same job
        import shutil

        shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def _verify(path: Path, data: bytes) -> None:
    sidecar = digest_path(path)
    if not sidecar.is_file():
        return  # written before checksums, or the crash came between the file and its sidecar
    fields = sidecar.read_text().split()
    expected = fields[0] if fields else ""
    if hashlib.sha256(data).hexdigest() != expected:
        raise CheckpointError(f"{path} fails its checksum ({sidecar.name}): the file is corrupt or truncated")


def load_checkpoint(path: str | Path, fallback: bool = False, check=None) -> dict[str, Any]:
    """Read a training checkpoint safely (tensors and plain containers only), verifying its checksum;
    `check(state, source)` may refuse what it holds (CheckpointError).

    With `fallback`, a missing, corrupt or truncated `path` (whatever the damage: CheckpointError from the
    read or from `check`) gives way to the previous checkpoint (checkpoint.prev.pt) with a warning; a file
    refused for safety never does. When the previous one fails too, the error named is the newer file's.
    """
    path = Path(path)
    try:
        return _load_checkpoint(path, check)
    except CheckpointError as err:
        prev = previous_path(path)
        if not fallback or getattr(err, "unsafe", False) or not prev.is_file():
            raise
        try:
            state = _load_checkpoint(prev, check)
        except CheckpointError:
            raise err from None
        warnings.warn(f"{err}; resuming from the previous checkpoint {prev} instead", stacklevel=2)
        return state


# First bytes of image files, given as weights by mistake (e.g. predict's image and --weights swapped).
IMAGE_MAGIC = (
    (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
)  # fmt: skip


def file_kind(path: Path, data: bytes) -> str | None:
    """What `data` (the bytes of `path`) is when it is a model file of another kind than a torch checkpoint,
    from its first bytes, its zip members or its suffix: sknet's exports, safetensors weights, images. None
    otherwise (then it is a damaged checkpoint, or no model file at all)."""
    if data[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except (zipfile.BadZipFile, ValueError, EOFError):
            return None
        if any(name.endswith("/archive_format") for name in names):
            return "a torch.export program (an export: sknet eval and sknet predict run it)"
        if any("/code/" in name for name in names):
            return "a TorchScript module (an export: sknet eval and sknet predict run it)"
        return None
    image = next((kind for magic, kind in IMAGE_MAGIC if data.startswith(magic)), None)
    if image is not None or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return f"an image ({image or 'WebP'})"
    header = int.from_bytes(data[:8], "little") if len(data) >= 9 else 0
    if 0 < header <= len(data) - 8 and data[8:9] == b"{":
        return "a safetensors weights file"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (an export: sknet eval and sknet predict run it)"
    return None


RUN_FILES_TO_NAME = ("model.safetensors", "checkpoint.pt")


def not_a_file(path: Path, what: str, names: tuple[str, ...] = RUN_FILES_TO_NAME) -> CheckpointError:
    """The error for `what` at `path` that is not a file: a folder (naming the first of `names` it holds, e.g.
    a run folder's weights) or nothing at all."""
    if path.is_dir():
        inside = next((path / name for name in names if (path / name).is_file()), None)
        hint = f": give {one_line(inside)}" if inside is not None else ""
        return CheckpointError(f"{what} {one_line(path)} is a folder, not a file{hint}")
    return CheckpointError(f"{what} {one_line(path)} does not exist")


def _load_checkpoint(path: Path, check=None) -> dict[str, Any]:
    if not path.is_file():
        raise not_a_file(path, "checkpoint", ("checkpoint.pt",))
    data = path.read_bytes()  # read once: checksummed, then unpickled from memory
    _verify(path, data)
    kind = file_kind(path, data)
    if kind is not None:
        raise CheckpointError(f"{path} is {kind}, not a checkpoint")
    if not data.startswith((b"PK\x03\x04", b"\x80")):  # torch.save writes a zip archive (or, legacy, a pickle)
        raise CheckpointError(f"{path} is not a torch checkpoint (neither torch's zip format nor a pickle)")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        if "GLOBAL" in text or "global" in text:  # a pickle that names code to import and run
            unsafe = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "").split(" was ")[0]
            unsafe = one_line(unsafe.removeprefix("WeightsUnpickler error: "))
            refused = CheckpointError(
                f"refusing to load {path}: it holds Python objects whose loading would run code "
                f"({unsafe or 'disallowed global'}); only tensors and "
                "plain containers are accepted. Convert it to safetensors in a trusted environment"
            )
            refused.unsafe = True  # never fall back silently past a refused file
            raise refused from None
        raise CheckpointError(f"{path} is corrupt or truncated (not a torch checkpoint)") from None
    except Exception as err:  # damage surfaces as any type (struct.error, IndexError, TypeError, ...)
        reason = one_line(str(err).splitlines()[0] if str(err) else type(err).__name__)
        raise CheckpointError(f"{path} is corrupt or truncated: {reason}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a checkpoint dictionary")
    model = state.get("model") if isinstance(state.get("model"), dict) else state
    if "model" in state and not isinstance(state["model"], dict):
        raise CheckpointError(f"{path} is corrupt: its model is not a state dict")
    if "model" in state or all(isinstance(v, torch.Tensor) for v in state.values()):
        check_state_dict(model, str(path))
    if check is not None:
        check(state, str(path))
    return state


def save_weights(path: str | Path, model: nn.Module, metadata: dict[str, Any]) -> None:
    """Write the model's state dict as safetensors, atomically, with JSON-encoded `metadata`."""
    from safetensors.torch import save

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": "pt", "sknet": json.dumps(metadata)}
    atomic_write(path, lambda f: f.write(save(tensors, metadata=meta)))


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, sknet metadata) of a ``.safetensors`` file, or of a checkpoint/state-dict ``.pt`` file."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path, "weights file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, with_tensors=True)
    state = load_checkpoint(path)
    if "meta" in state and isinstance(state.get("model"), dict):  # an sknet training checkpoint
        return strip_prefixes(state["model"]), check_record(state["meta"], str(path))
    return unwrap_state_dict(state, str(path)), {}


# Where other trainers put the weights in a checkpoint, in the order timm's load_checkpoint takes them
# (its default use_ema=True: the EMA weights when the file has them).
STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
# Key prefixes added by wrappers: DataParallel / DistributedDataParallel, torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_state_dict(state: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint of any common layout: bare, or under one of STATE_DICT_KEYS; keys
    without WRAPPER_PREFIXES. CheckpointError when no tensors are found."""
    for key in STATE_DICT_KEYS:
        if isinstance(state.get(key), dict) and state[key]:
            state = state[key]
            break
    if not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{source} holds neither a state dict nor a checkpoint with one under {', '.join(STATE_DICT_KEYS)}"
        )
    return strip_prefixes(state)


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` with WRAPPER_PREFIXES removed from the start of its keys (repeatedly: module._orig_mod.x → x)."""

    def strip(key: str) -> str:
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        return key

    stripped = {strip(k): v for k, v in state.items()}
    return stripped if len(stripped) == len(state) else state  # never merge two tensors into one key


def _read_safetensors(path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """One pass over a safetensors file: its tensors (if asked) and its sknet metadata."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {}
            for key in f.keys() if with_tensors else ():  # safe_open has no __iter__
                tensors[key] = f.get_tensor(key)
                check_finite([(key, tensors[key])], str(path))  # streamed: refused at the first bad tensor
        tensors = strip_prefixes(tensors)
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from None
    try:
        metadata = json.loads(meta.get("sknet", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its sknet metadata is not valid JSON") from None
    return tensors, check_record(metadata, str(path))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The sknet metadata of a weights file; for safetensors only the header is read."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file(path, "weights file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path, with_tensors=False)[1]
    return read_weights(path)[1]


BATCH_COUNT = ".num_batches_tracked"  # BatchNorm's count of training batches


def load_state_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    expected_name: str | None = None,
    found_name: str | None = None,
    check_only: bool = False,
) -> None:
    """Load `state` strictly; a mismatch raises CheckpointError saying what differs (`check_only`: only
    compare, e.g. against a model built on the meta device before any memory is allocated)."""
    if expected_name and found_name and expected_name != found_name:
        raise CheckpointError(f"{source} holds weights of model {found_name!r}, not {expected_name!r}")
    own = model.state_dict()
    # BatchNorm's count of training batches is bookkeeping, not a weight: other trainers' files often leave it
    # out (torch's own loader fills it for old files), a frozen norm (torchvision's FrozenBatchNorm2d) has none,
    # and it is used only with momentum=None, which no sknet model has. Absent, the model's is kept; one the
    # model has no place for is dropped.
    counters = {k: own[k] for k in own if k.endswith(BATCH_COUNT) and k not in state}
    state = {k: v for k, v in state.items() if k in own or not k.endswith(BATCH_COUNT)} | counters
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    classifier = [k for k in ("fc.weight", "fc.bias") if k in state and k in own and state[k].shape != own[k].shape]
    if shapes and len(shapes) == len(classifier) and not missing and not unexpected:
        have, want = state["fc.weight"].shape[0], own["fc.weight"].shape[0]
        raise CheckpointError(
            f"{source} has a classifier for {have} classes, this model for {want}: only the class count differs. "
            f"num_classes={have} loads it; to fine-tune, num_classes={want} re-initialises the classifier "
            "(create_model(..., weights=, num_classes=), sknet train --init-weights)"
        )
    if missing or unexpected or shapes:
        what = f"model {found_name!r}" if found_name else "another model or configuration"
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (e.g. {shapes[0]})")
        if missing:
            parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{source}: its tensors do not fit this model (they look like {what}): {'; '.join(parts)}"
        )
    if not check_only:
        model.load_state_dict(state)
