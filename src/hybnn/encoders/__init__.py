"""Code encoders: every kind that turns images into the binary codes a head trains on.

One module per kind, each with ``KIND`` (the artifact kind its directory declares), ``load``,
``save`` and a class that follows :class:`~hybnn.encoders.base.CodeEncoder`:

* :mod:`.vae`: the frozen binary-latent VAE (``hybnn pretrain``, ``hybnn recode``);
* :mod:`.distilled`: a fully binary encoder distilled from it (``hybnn distill``);
* :mod:`.int8`: its encoder as a static int8 ONNX graph (``hybnn quantize``).

Callers open any kind with :func:`open_encoder` and pair it with a head by
:func:`~hybnn.encoders.base.require_same_encoder`. A new kind is one module and one line in
:data:`KINDS`. An encoder shipped in the package (``general``) opens by name: :func:`resolve`
(:mod:`.shipped`) turns a name or path into its directory, for every caller.

The kinds' modules (and torch) are imported on first use, so :func:`resolve` is usable by the
command-line checks that run before torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING, Any

from hybnn.artifacts import declared_kind
from hybnn.encoders.base import (
    ENCODE_BATCH,
    CodeEncoder,
    EncoderGraph,
    EncoderIdentity,
    check_images,
    require_same_encoder,
)
from hybnn.encoders.shipped import SHIPPED, resolve
from hybnn.errors import ArtifactError

_KIND_MODULES = ("vae", "distilled", "int8")  # the first is what an undeclared kind means

if TYPE_CHECKING:
    KINDS: dict[str, ModuleType]


def _kinds() -> dict[str, ModuleType]:
    modules = [import_module(f"hybnn.encoders.{name}") for name in _KIND_MODULES]
    return {module.KIND: module for module in modules}


def __getattr__(name: str) -> Any:
    if name == "KINDS":  # kind -> module, built on first use (it imports torch)
        return _kinds()
    raise AttributeError(f"module 'hybnn.encoders' has no attribute {name!r}")


def open_encoder(directory: str | os.PathLike[str], device: str = "cpu",
                 threads: int | None = None, kinds: Sequence[str] | None = None
                 ) -> CodeEncoder:
    """The encoder in ``directory`` (or shipped under that name, :func:`resolve`), by the
    kind it declares, on ``device`` (``threads`` for ONNX Runtime; default torch's).
    ``kinds`` limits the kinds accepted, for a command that needs one (distilling needs the
    VAE)."""
    directory = resolve(directory)
    kind = declared_kind(directory)
    known = _kinds()
    module = known.get(kind) if kind else next(iter(known.values()))  # undeclared: a VAE
    if module is None:
        raise ArtifactError(f"{directory} holds a {kind}, not an encoder "
                            f"(one of: {', '.join(known)})")
    if kinds is not None and module.KIND not in kinds:
        raise ArtifactError(f"{directory} holds a {module.LABEL}; this needs a "
                            f"{' or '.join(known[k].LABEL for k in kinds)}")
    encoder: CodeEncoder = module.load(directory, device, threads)
    return encoder


__all__ = ["ENCODE_BATCH", "KINDS", "SHIPPED", "CodeEncoder", "EncoderGraph",
           "EncoderIdentity", "check_images", "open_encoder", "require_same_encoder", "resolve"]
