"""A Hugging Face Hub cache folder built on disk, in the Hub's layout, for offline tests.

``models--ORG--NAME/refs/main`` names a commit; ``snapshots/<commit>/`` holds the files (the Hub keeps
them in ``blobs/`` with links from the snapshot; readers only follow the snapshot's paths).
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def add_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put `files` (name → bytes) into `cache` as the main revision of the model repo `repo_id`."""
    folder = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    for name, data in files.items():
        blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(blob)
    return snapshot


def offline_hub(monkeypatch, cache: Path) -> None:
    """Point huggingface_hub at `cache` and forbid it the network (as HF_HUB_OFFLINE=1 does)."""
    import socket

    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise OSError("tests do not touch the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
