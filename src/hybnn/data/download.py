"""Download files from public mirrors into a cache, with SHA-256 checks.

The cache lives in ``$HYBNN_CACHE`` (default ``~/.cache/hybnn``). A file is only moved into
the cache after its checksum matched; a bad or partial download never replaces a good file.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hybnn.artifacts import atomic_write_bytes
from hybnn.errors import DataError


@dataclass(frozen=True)
class RemoteFile:
    """A file on public mirrors. ``sha256`` is of the file itself, or of its gunzipped
    content when ``checksum_of_content`` is set (robust to recompressed copies)."""

    name: str
    sha256: str
    checksum_of_content: bool = False

    def verify(self, data: bytes) -> bool:
        if self.checksum_of_content:
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError):
                return False
        return hashlib.sha256(data).hexdigest() == self.sha256


def cache_dir() -> Path:
    return Path(os.environ.get("HYBNN_CACHE", Path.home() / ".cache" / "hybnn"))


def fetch(
    dataset: str,
    files: Sequence[RemoteFile],
    mirrors: Sequence[str],
    alternatives: str,
    timeout: float = 30.0,
) -> dict[str, Path]:
    """Return cached paths of ``files``, downloading missing ones; one clear error offline."""
    target = cache_dir() / dataset
    paths: dict[str, Path] = {}
    for remote in files:
        path = target / remote.name
        if path.is_file() and remote.verify(path.read_bytes()):
            paths[remote.name] = path
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + remote.name
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    data = resp.read()
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
                continue
            if not remote.verify(data):
                errors.append(f"{url}: checksum mismatch")
                continue
            atomic_write_bytes(path, data)
            paths[remote.name] = path
            break
        else:
            raise DataError(
                f"cannot download {dataset} ({remote.name}) from any mirror (offline?); "
                f"use {alternatives}. Last error: {errors[-1] if errors else 'none'}"
            )
    return paths
