"""Malformed versions of a valid file, for the readers' fuzz tests: random bytes, the file cut at every 1/16 of
its length, and bytes flipped at random places (seeded: the same inputs on every run)."""

from __future__ import annotations

import random


def malformed(data: bytes, seed: int = 0) -> list[tuple[str, bytes]]:
    """(name, bytes) of each malformed version of `data`."""
    rng = random.Random(seed)
    variants = [("empty", b"")]
    variants += [(f"random {n} bytes", rng.randbytes(n)) for n in (1, 64, max(len(data), 65))]
    variants += [(f"cut at {k}/16", data[: len(data) * k // 16]) for k in range(1, 16)]
    for i in range(4):
        flipped = bytearray(data)
        for _ in range(8):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        variants.append((f"flipped {i}", bytes(flipped)))
    return variants


def one_line_outcome(code: int, err: str, allowed: tuple[int, ...]) -> None:
    """The command ended with a documented status and, unless it succeeded, said why in one line."""
    assert code in allowed, (code, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 0 or (len(lines) == 1 and err.count("\n") == 1), err
