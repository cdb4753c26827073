"""Code encoders: every kind that turns images into the binary codes a head trains on.

One module per kind, each with ``KIND`` (the artifact kind its directory declares), ``load``,
``save`` and a class that follows :class:`~hybnn.encoders.base.CodeEncoder`:

* :mod:`.vae`: the frozen binary-latent VAE (``hybnn pretrain``, ``hybnn recode``);
* :mod:`.distilled`: a fully binary encoder distilled from it (``hybnn distill``);
* :mod:`.int8`: its encoder as a static int8 ONNX graph (``hybnn quantize``).

Callers open any kind with :func:`open_encoder` and pair it with a head by
:func:`~hybnn.encoders.base.require_same_encoder`. A new kind is one module and one line in
:data:`KINDS`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

from hybnn.artifacts import declared_kind
from hybnn.encoders import distilled, int8, vae
from hybnn.encoders.base import (
    ENCODE_BATCH,
    CodeEncoder,
    EncoderGraph,
    EncoderIdentity,
    check_images,
    require_same_encoder,
)
from hybnn.errors import ArtifactError

KINDS: dict[str, ModuleType] = {module.KIND: module for module in (vae, distilled, int8)}


def open_encoder(directory: str | os.PathLike[str], device: str = "cpu",
                 threads: int | None = None, kinds: Sequence[str] | None = None
                 ) -> CodeEncoder:
    """The encoder in ``directory``, by the kind it declares, on ``device`` (``threads`` for
    ONNX Runtime; default torch's). ``kinds`` limits the kinds accepted, for a command that
    needs one (distilling needs the VAE)."""
    kind = declared_kind(directory)
    module = KINDS.get(kind or vae.KIND)
    if module is None:
        raise ArtifactError(f"{directory} holds a {kind}, not an encoder "
                            f"(one of: {', '.join(KINDS)})")
    if kinds is not None and module.KIND not in kinds:
        raise ArtifactError(f"{directory} holds a {module.LABEL}; this needs a "
                            f"{' or '.join(KINDS[k].LABEL for k in kinds)}")
    encoder: CodeEncoder = module.load(directory, device, threads)
    return encoder


__all__ = ["ENCODE_BATCH", "KINDS", "CodeEncoder", "EncoderGraph", "EncoderIdentity",
           "check_images", "open_encoder", "require_same_encoder"]
