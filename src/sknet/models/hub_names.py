"""Model names that point at weights: ``local-dir:DIR`` (a folder written by :func:`sknet.save_pretrained`)
and ``hf-hub:ORG/NAME`` (such a folder on the Hugging Face Hub, fetched by ``huggingface_hub``).

The Hub's local cache is read first, without any network access (``HF_HUB_OFFLINE=1`` or no network
needs nothing else); only a repository that is not cached is downloaded, and where that is impossible
the error says in one line what to run.
"""

from __future__ import annotations

from pathlib import Path

from sknet.errors import CheckpointError, ConfigError

PREFIXES = ("local-dir:", "hf-hub:")
WEIGHTS_FILE = "model.safetensors"  # the Hub's and timm's name for the weights
# sknet's models that compute what a timm model computes, with timm's name: their weights convert
# (sknet.convert.timm) and timm's pretrained tags are theirs (sknet.timm_models)
TIMM_COUNTERPARTS = {
    "sknet50": "skresnext50_32x4d",
    "resnext50": "resnext50_32x4d",
    "senet50": "seresnext50_32x4d",
    "resnext101": "resnext101_32x4d",
    "senet101": "seresnext101_32x4d",
}


def is_hub_name(name: object) -> bool:
    return isinstance(name, str) and name.startswith(PREFIXES)


def hub_weights(name: str) -> Path:
    """The weights file of a ``local-dir:`` or ``hf-hub:`` name. ConfigError for a malformed name or a
    missing huggingface_hub; CheckpointError for a folder or repository without the weights."""
    kind, _, where = name.partition(":")
    if kind == "local-dir":
        folder = Path(where).expanduser()
        if not (folder / WEIGHTS_FILE).is_file():
            raise CheckpointError(f"{name}: no {WEIGHTS_FILE} in {folder} (write one with sknet.save_pretrained)")
        return folder / WEIGHTS_FILE
    repo_id, _, revision = where.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ConfigError(f"{name}: a Hub model is named hf-hub:ORG/NAME (optionally @REVISION)")
    return _from_hub(repo_id, revision or None)


def _from_hub(repo_id: str, revision: str | None) -> Path:
    try:
        import huggingface_hub
        from huggingface_hub import constants
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ConfigError("hf-hub: names need huggingface_hub: pip install 'sknet[hub]'") from None
    fetch = {"repo_id": repo_id, "revision": revision}
    try:  # the cache first: no network at all for a cached repository
        return Path(huggingface_hub.hf_hub_download(filename=WEIGHTS_FILE, local_files_only=True, **fetch))
    except LocalEntryNotFoundError:
        pass
    hint = (
        f"hf-hub:{repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}); on a machine with "
        f"internet run `hf download {repo_id}` (with HF_HUB_CACHE pointing at the cache this machine reads), "
        "or download the repository's files to a folder and use local-dir:FOLDER"
    )
    if constants.HF_HUB_OFFLINE:
        raise CheckpointError(f"{hint} (HF_HUB_OFFLINE is set)")
    try:
        return Path(huggingface_hub.hf_hub_download(filename=WEIGHTS_FILE, **fetch))
    except Exception as err:  # network, authentication and missing-file errors come in many types
        raise CheckpointError(f"{hint} ({type(err).__name__}: {str(err).splitlines()[0][:160]})") from None
