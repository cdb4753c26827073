"""Artifact files: atomic writes, content fingerprints, and safetensors + JSON bundles.

An artifact directory holds ``weights.safetensors`` and ``meta.json`` and is replaced as a
unit when saved again (see :func:`save_artifact`). The metadata records the
artifact kind, the format version, the configuration needed to rebuild the object and the
SHA-256 fingerprint of the weights file. Loaders check all of it before trusting the file;
nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from hybnn.errors import ArtifactError, HybnnError

if TYPE_CHECKING:
    import torch

FORMAT_VERSION = 1
WEIGHTS_NAME = "weights.safetensors"
META_NAME = "meta.json"
# Caps on what a loader reads whole: metadata is a few KiB (a model's config and history),
# weights at most tens of MiB; a file above its cap is refused before it is read.
MAX_META_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 1 << 30
# O_NONBLOCK: opening a FIFO (or a device) returns at once instead of waiting for a writer,
# and the file's type is checked before anything is read from it.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
# A staging directory of a save: ``.NAME.new-PID-HEX``, PID the writing process.
_STAGING = re.compile(r"\.(?P<name>.+)\.new-(?:(?P<pid>\d+)-)?[0-9a-f]+")
_STALE_UNOWNED_S = 3600  # a staging directory of an older hybnn (no pid): gone after an hour


def open_regular(path: str | os.PathLike[str], what: str,
                 error: type[HybnnError] = ArtifactError) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file; every failure an ``error``
    naming ``path`` and ``what`` it should be.

    A FIFO, a device, a socket or a directory is refused at once (the open never blocks).
    """
    path = Path(path)
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    return _regular_file(fd, path, what, error)


def read_regular(path: str | os.PathLike[str], what: str, limit: int,
                 error: type[HybnnError] = ArtifactError) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`), at most ``limit``."""
    with open_regular(path, what, error) as fh:
        return _read_capped(fh, Path(path), what, limit, error)


def _regular_file(fd: int, path: Path, what: str, error: type[HybnnError]) -> BinaryIO:
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode)
                    else "not a regular file (a FIFO, device or socket)")
            raise error(f"cannot read {what} {path}: it is {kind}")
        return os.fdopen(fd, "rb")
    except OSError as exc:
        os.close(fd)
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except BaseException:
        os.close(fd)
        raise


def _read_capped(fh: BinaryIO, path: Path, what: str, limit: int,
                 error: type[HybnnError]) -> bytes:
    try:
        size = os.fstat(fh.fileno()).st_size
        if size > limit:
            raise error(f"{what} {path} has {size:,} bytes, more than the limit of "
                        f"{limit:,} (hybnn.artifacts)")
        data = fh.read(limit + 1)  # one byte more: a file that grows meanwhile is refused
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(f"{what} {path} has more than the limit of {limit:,} bytes "
                    "(hybnn.artifacts)")
    return data


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
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
    with open_regular(path, "file") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a JSON object (at most MAX_META_BYTES), every failure one clear ArtifactError."""
    path = Path(path)
    if not os.path.lexists(path):
        raise ArtifactError(f"{what} not found: {path}")
    return parse_json(read_regular(path, what, MAX_META_BYTES), f"{what} {path}")


def save_artifact(
    directory: str | os.PathLike[str],
    kind: str,
    tensors: dict[str, torch.Tensor],
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save tensors + metadata as the artifact directory ``directory``, replaced as a unit.

    Weights and metadata are written into a fresh sibling directory, which then takes the
    place of ``directory`` in one atomic exchange (Linux ``renameat2``; elsewhere two
    renames). Other files of the old directory (a checkpoint, plots) are carried over as
    hard links. Writers are serialized (:func:`writer_lock`). An existing artifact of
    another kind is never overwritten. Staging directories that a killed save of the same
    destination left behind are removed first (:func:`remove_stale_staging`). Every file is
    written owner-only (0600). Returns the metadata (with fingerprint).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    flat = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with writer_lock(directory):
        require_kind_or_absent(directory, kind)
        remove_stale_staging(directory)
        staging = _sibling(directory, f"new-{os.getpid()}")
        try:
            staging.mkdir()
            save_file(flat, str(staging / WEIGHTS_NAME))
            os.chmod(staging / WEIGHTS_NAME, 0o600)
            meta = {
                "kind": kind,
                "format_version": FORMAT_VERSION,
                "hybnn_version": _package_version(),
                "fingerprint": sha256_file(staging / WEIGHTS_NAME),
                "config": config,
                **(extra or {}),
            }
            _write_private(staging / META_NAME, (json.dumps(meta, indent=2) + "\n").encode())
            if directory.is_dir():
                _link_others(directory, staging)
            _fsync_dir(staging)
            replace_directory(staging, directory)
        except OSError as exc:
            raise ArtifactError(f"cannot write {directory}: {exc.strerror or exc}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return meta


def _write_private(path: Path, data: bytes) -> None:
    """Create ``path`` owner-only (0600, like the weights) and write ``data`` to it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def remove_stale_staging(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the staging directories (``.NAME.new-PID-*``) of saves to ``directory`` whose
    process is gone (killed mid-save); returns them. A live writer's directory is kept."""
    directory = Path(directory)
    removed: list[Path] = []
    try:
        siblings = list(directory.parent.iterdir())
    except OSError:
        return removed
    for item in siblings:
        match = _STAGING.fullmatch(item.name)
        if match is None or match["name"] != directory.name or item.is_symlink():
            continue
        if not item.is_dir() or not _staging_is_stale(item, match["pid"]):
            continue
        shutil.rmtree(item, ignore_errors=True)
        removed.append(item)
    return removed


def _staging_is_stale(item: Path, pid: str | None) -> bool:
    if pid is None:  # written by an older hybnn: judged by its age
        try:
            return time.time() - item.lstat().st_mtime > _STALE_UNOWNED_S
        except OSError:
            return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OverflowError, OSError):  # alive as another user (EPERM), or unknown
        return False
    return False


def declared_kind(directory: str | os.PathLike[str]) -> str | None:
    """The ``kind`` an artifact directory's metadata declares (None: no metadata file);
    unreadable metadata is an :class:`ArtifactError`."""
    path = Path(directory) / META_NAME
    if not path.is_file():
        return None
    return str(read_json(path, "artifact metadata").get("kind"))


def require_kind_or_absent(directory: str | os.PathLike[str], kind: str) -> None:
    """Refuse to write a ``kind`` artifact over an artifact of another kind (or over a
    directory that is not an artifact but holds files)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ArtifactError(f"cannot write a {kind} to {directory}: it is a file")
    if directory.is_dir() and any(item.is_dir() for item in directory.iterdir()):
        raise ArtifactError(f"cannot write a {kind} to {directory}: it holds sub-directories, "
                            "so it is not an artifact directory (choose another --out)")
    if (directory / META_NAME).is_file():
        try:
            found = declared_kind(directory)
        except ArtifactError:
            found = "unreadable"
        if found != kind:
            raise ArtifactError(f"{directory} holds a {found!r} artifact; refusing to "
                                f"overwrite it with a {kind!r} (choose another --out)")


@contextlib.contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Serialize writers of artifacts in ``directory``'s parent (an flock on the parent
    directory, held only while a save stages and swaps): two concurrent saves of one
    artifact both complete, one after the other, and the last one wins whole."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the exchange is still atomic
        yield
        return
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory.parent, os.O_RDONLY)
    except OSError as exc:
        raise ArtifactError(f"cannot write {directory}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def replace_directory(new: Path, target: Path) -> None:
    """Put directory ``new`` at ``target``; the old ``target`` (if any) ends up at ``new``."""
    if not target.exists():
        os.rename(new, target)
        return
    if _exchange(new, target):
        return
    # No atomic exchange on this system: two renames (a crash between them leaves the old
    # version at a hidden sibling, which the error of the next load names).
    old = _sibling(target, "old")
    os.rename(target, old)
    os.rename(new, target)
    os.rename(old, new)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _sibling(directory: Path, what: str) -> Path:
    return directory.parent / f".{directory.name}.{what}-{secrets.token_hex(4)}"


def _link_others(old: Path, new: Path) -> None:
    for item in old.iterdir():
        if item.name in (WEIGHTS_NAME, META_NAME) or not item.is_file():
            continue
        try:
            os.link(item, new / item.name)
        except OSError:
            shutil.copy2(item, new / item.name)


def _fsync_dir(directory: Path) -> None:
    for item in directory.iterdir():
        if item.is_file():
            with open(item, "rb") as fh:
                os.fsync(fh.fileno())


def load_artifact(
    directory: str | os.PathLike[str], kind: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load and validate a bundle written by :func:`save_artifact`.

    Metadata and weights are read from one open handle of the directory, so a save that
    replaces the directory meanwhile is seen whole or not at all; the weights are hashed
    and parsed from the same bytes.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as load_bytes

    directory = Path(directory)
    if not directory.is_dir():
        left = sorted(directory.parent.glob(f".{directory.name}.old-*"))
        hint = f" (an interrupted save left the previous version at {left[-1]})" if left else ""
        raise ArtifactError(f"{kind} artifact not found: {directory} is not a directory{hint}")
    meta_bytes, blob = _read_snapshot(directory)
    if meta_bytes is None:
        raise ArtifactError(f"{kind} metadata not found: {directory / META_NAME}")
    meta = parse_json(meta_bytes, f"{kind} metadata {directory / META_NAME}")
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
    if blob is None:
        raise ArtifactError(f"{kind} weights missing: {weights}")
    if hashlib.sha256(blob).hexdigest() != meta.get("fingerprint"):
        raise ArtifactError(
            f"{weights} does not match the fingerprint in its metadata (corrupt or modified file)"
        )
    try:
        tensors = load_bytes(blob)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"cannot read {weights}: {exc}") from None
    return tensors, meta


def parse_json(raw: bytes, what: str) -> dict[str, Any]:
    """A JSON object from bytes, every failure one clear ArtifactError."""
    try:
        obj = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ArtifactError(f"{what} is not valid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise ArtifactError(f"{what} must hold a JSON object")
    return obj


def _read_snapshot(directory: Path, attempts: int = 5) -> tuple[bytes | None, bytes | None]:
    """(meta.json, weights) bytes read through one handle of ``directory`` (None: absent)."""
    for attempt in range(attempts):
        try:
            fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise ArtifactError(f"cannot read {directory}: {exc.strerror or exc}") from None
        try:
            pair = (_read_at(fd, directory, META_NAME), _read_at(fd, directory, WEIGHTS_NAME))
        finally:
            os.close(fd)
        if None not in pair or attempt == attempts - 1:
            return pair
        # A file is missing: this handle may name a version a concurrent save just retired.
    return pair


def _read_at(fd: int, directory: Path, name: str) -> bytes | None:
    """File ``name`` of the directory handle ``fd`` (None: absent), regular files only."""
    path = directory / name
    what, limit = ("metadata", MAX_META_BYTES) if name == META_NAME else (
        "weights", MAX_WEIGHTS_BYTES)
    try:
        if os.open in os.supports_dir_fd:
            handle = os.open(name, _READ_FLAGS, dir_fd=fd)
        else:
            handle = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ArtifactError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    with _regular_file(handle, path, what, ArtifactError) as fh:
        return _read_capped(fh, path, what, limit, ArtifactError)


def _package_version() -> str:
    from hybnn import __version__

    return __version__


def versions() -> dict[str, str]:
    """Provenance recorded beside every result: hybnn, torch, numpy and Python versions."""
    import platform
    import sys
    from importlib import metadata

    import numpy as np

    from hybnn import __version__

    torch = sys.modules.get("torch")
    try:
        torch_version = torch.__version__ if torch is not None else metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "absent"
    return {"hybnn": __version__, "torch": str(torch_version), "numpy": np.__version__,
            "python": platform.python_version()}
