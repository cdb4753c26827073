"""Encoders that ship inside the package, opened by name: ``general`` is the paper's
task-independent encoder, pretrained once on every offline 28x28 source
(:mod:`hybnn.data.general`; recipe ``configs/general-encoder.toml``).

:func:`resolve` is the one place a name becomes a directory: every ``--encoder`` option and
:func:`~hybnn.encoders.open_encoder` go through it. A shipped encoder is checked against the
SHA-256 of its two files pinned here before anything trusts it; a missing or altered file
is one :class:`ArtifactError` saying to reinstall, never a download. No torch here: the
command-line checks run before torch is imported.
"""

from __future__ import annotations

import os
from pathlib import Path

from hybnn.artifacts import sha256_file
from hybnn.errors import ArtifactError

PACKAGE_DIR = Path(__file__).resolve().parent
META_NAME = "meta.json"  # the artifact's files (hybnn.artifacts), named here without torch
WEIGHTS_NAME = "weights.safetensors"

# name -> SHA-256 of (meta.json, weights.safetensors); the weights' hash is the encoder's
# fingerprint, the one its codes and heads record.
SHIPPED: dict[str, tuple[str, str]] = {
    "general": ("25c681760c515831e6336cbdc2f2f47c5d314ac5e73a4ed50fc8ec4b22ee6da5",
                "b7c23ac6ff068e6d7d5f66f820f537ed79463e03c9cc89f3198c76eb0cae4455"),
}


def shipped_dir(name: str) -> Path:
    """Where the shipped encoder ``name`` lives in the installed package."""
    return PACKAGE_DIR / name


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """The directory of an encoder given by path, or by the name of a shipped one (checked
    against its pinned hashes). A path is returned as given, unchecked: its loader checks it.
    A bare shipped name always means the shipped encoder (a directory of that name in the
    working directory is ``./general``)."""
    name = str(name_or_path)
    if name not in SHIPPED:
        return Path(name_or_path)
    directory = shipped_dir(name)
    for file, pinned in zip((META_NAME, WEIGHTS_NAME), SHIPPED[name], strict=True):
        problem = _check(directory / file, pinned)
        if problem:
            raise ArtifactError(f"the shipped encoder {name!r} is missing or damaged: "
                                f"{directory / file} "
                                f"{problem}; reinstall hybnn (pip install --force-reinstall "
                                "hybnn) to restore it")
    return directory


def _check(path: Path, sha256: str) -> str:
    """What is wrong with ``path`` against its pinned SHA-256 ('' if nothing)."""
    if not path.is_file():
        return "is missing"
    try:
        digest = sha256_file(path)
    except ArtifactError as exc:
        return f"cannot be read ({exc})"
    if digest != sha256:
        return f"has SHA-256 {digest[:12]}, not the pinned {sha256[:12]}"
    return ""
