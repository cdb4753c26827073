"""Artifact files: atomic writes, content fingerprints, and safetensors + JSON bundles.

An artifact directory holds ``weights.safetensors`` and ``meta.json``. The metadata records the
artifact kind, the format version, the configuration needed to rebuild the object and the
SHA-256 fingerprint of the weights file. Loaders check all of it before trusting the file;
nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from hybnn.errors import ArtifactError

if TYPE_CHECKING:  # imported lazily: the engine runtime writes files without torch
    import torch

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
META_NAME = "meta.json"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write ``path`` through ``write(tmp_path)`` then rename: readers never see half a file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:  # disk full, target is a directory, ...
        tmp_path.unlink(missing_ok=True)
        raise ArtifactError(f"cannot write {path}: {exc.strerror or exc}") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a JSON object, turning every failure into one clear ArtifactError."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{what} {path} is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{what} {path} must hold a JSON object")
    return obj


def save_bundle(
    directory: str | os.PathLike[str],
    kind: str,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save tensors + metadata into ``directory``; returns the metadata (with fingerprint)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    weights = atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(flat, str(p)))
    meta = {
        "kind": kind,
        "format_version": FORMAT_VERSION,
        "hybnn_version": _package_version(),
        "fingerprint": sha256_file(weights),
        "config": config,
        **(extra or {}),
    }
    atomic_write_json(directory / META_NAME, meta)
    return meta


def load_bundle(
    directory: str | os.PathLike[str], kind: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and validate a bundle written by :func:`save_bundle`."""
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{kind} artifact not found: {directory} is not a directory")
    meta = read_json(directory / META_NAME, f"{kind} metadata")
    if meta.get("kind") != kind:
        raise ArtifactError(
            f"{directory} holds a {meta.get('kind')!r} artifact, expected {kind!r}"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{directory}: format version {meta.get('format_version')} is not supported "
            f"(this hybnn reads version {FORMAT_VERSION})"
        )
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ArtifactError(f"{kind} weights missing: {weights}")
    actual = sha256_file(weights)
    if actual != meta.get("fingerprint"):
        raise ArtifactError(
            f"{weights} does not match the fingerprint in its metadata (corrupt or modified file)"
        )
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {weights}: {exc}") from None
    return tensors, meta


def _package_version() -> str:
    from hybnn import __version__

    return __version__
