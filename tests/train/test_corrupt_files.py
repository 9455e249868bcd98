"""Every damaged checkpoint is a corrupt checkpoint: random byte edits and truncations of a real
checkpoint (the whole file, its zip members, its pickle) are each refused with a CheckpointError (exit 4,
one line), never another exception (exit 1); `--resume` falls back to checkpoint.prev.pt for every one.
In-process: hundreds of cases, one torch.load each. A damaged pickle that names code to import (a flipped
letter in a global's name) is refused as unsafe, exit 4, and deliberately never skipped over."""

import io
import random
import warnings
import zipfile

import pytest

from sknet.errors import CheckpointError
from sknet.train.state import resume_from
from sknet.train.trainer import Trainer
from sknet.weights import load_state_into, read_weights
from tests.train.helpers import tiny_config

CASES = 480  # per run: a fixed seed, so a failure is reproducible by its label


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    trainer = Trainer(tiny_config(out, epochs=1, model_options={}))
    trainer.fit()
    return trainer, (out / "checkpoint.pt").read_bytes()


def _rezip(data: bytes, edit) -> bytes:
    """The checkpoint with its members passed through `edit(name, bytes) -> bytes | None` (None: dropped),
    rewritten as a valid zip (CRCs recomputed), so that the damage reaches torch's reader and unpickler."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for name in source.namelist():
            content = edit(name, source.read(name))
            if content is not None:
                target.writestr(name, content)
    return out.getvalue()


def _scramble(rng: random.Random, blob: bytes) -> bytes:
    blob = bytearray(blob)
    kind = rng.choice(["flip", "set", "cut", "drop", "insert"])
    if not blob or kind == "insert":
        at = rng.randrange(len(blob) + 1)
        return bytes(blob[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 8))) + blob[at:])
    if kind == "cut":
        return bytes(blob[: rng.randrange(len(blob))])
    if kind == "drop":
        at = rng.randrange(len(blob))
        return bytes(blob[:at] + blob[at + rng.randint(1, 16) :])
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(blob))
        blob[at] = blob[at] ^ (1 << rng.randrange(8)) if kind == "flip" else rng.choice([0, 0x7F, 0x80, 0xFF])
    return bytes(blob)


def damaged(data: bytes, seed: int):
    """(label, bytes): the whole file cut or scrambled, the pickle scrambled, a member scrambled or dropped."""
    rng = random.Random(seed)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    pickle_name = next(n for n in names if n.endswith("data.pkl"))
    for case in range(CASES):
        where = ["file", "pickle", "pickle", "pickle", "member", "drop"][case % 6]
        label = f"seed {seed} case {case}: {where}"
        if where == "file":
            yield label, _scramble(rng, data)
        elif where == "pickle":
            yield label, _rezip(data, lambda n, b: _scramble(rng, b) if n == pickle_name else b)
        else:
            victim = rng.choice([n for n in names if n != pickle_name])
            label += f" {victim}"
            drop = where == "drop"
            yield label, _rezip(data, lambda n, b, v=victim, d=drop: b if n != v else None if d else _scramble(rng, b))


def test_every_damaged_checkpoint_is_refused_as_corrupt_and_resume_falls_back(run, tmp_path):
    trainer, good = run
    path = tmp_path / "checkpoint.pt"
    escaped, refused, fell_back = [], 0, 0
    for label, blob in damaged(good, seed=27):
        path.write_bytes(blob)  # no checksum sidecar: the damage reaches torch.load and the checks after it
        try:  # what `sknet eval --weights checkpoint.pt` and `create_model(weights=)` do
            state, _ = read_weights(path)
            load_state_into(trainer.model, state, str(path), "sknet_tiny")
        except CheckpointError as err:
            refused += 1
            assert "\n" not in str(err), label
        except Exception as err:
            escaped.append(f"{label}: read_weights: {type(err).__name__}: {err}"[:300])
        # `sknet train --resume`: the previous checkpoint stands in for a damaged one, whatever the damage.
        (tmp_path / "checkpoint.prev.pt").write_bytes(good)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                resume_from(path, trainer, "sknet_tiny", rank=0)
            fell_back += bool(caught)
        except CheckpointError as err:  # a damaged global name reads as a hostile pickle: refused, no fallback
            if not getattr(err, "unsafe", False):
                escaped.append(f"{label}: resume: {err}"[:300])
        except Exception as err:
            escaped.append(f"{label}: resume: {type(err).__name__}: {err}"[:300])
    assert not escaped, f"{len(escaped)} of {CASES}:\n" + "\n".join(escaped[:20])
    assert refused > CASES // 2 and fell_back > CASES // 2  # most damage is damage (not a harmless byte)
