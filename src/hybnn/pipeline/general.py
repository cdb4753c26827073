"""Phase 1 on the general data: an encoder pretrained label-free on several sources at once,
from a recipe file (``configs/general-encoder.toml``: the sources and
:class:`PretrainConfig`'s fields). The shipped ``general`` encoder is built this way; so are
the leave-one-out encoders that check it generalizes (``bench/general_encoder.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hybnn.data.general import GENERAL_SOURCES, general_images
from hybnn.encoders import vae as vae_encoder
from hybnn.errors import DataError
from hybnn.pipeline.config import PretrainConfig
from hybnn.pipeline.pretrain import pretrain

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_recipe(path: str | os.PathLike[str]) -> tuple[list[str], PretrainConfig]:
    """(sources, pretrain config) of a recipe file; unknown keys and sources are refused."""
    path = Path(path)
    try:
        recipe = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise DataError(f"cannot read the recipe {path}: {exc}") from None
    sources = recipe.get("sources")
    if not isinstance(sources, list) or not sources or set(sources) - set(GENERAL_SOURCES):
        raise DataError(f"{path}: sources must be a list drawn from {list(GENERAL_SOURCES)}")
    settings = recipe.get("pretrain", {})
    unknown = (set(settings) - {f.name for f in fields(PretrainConfig)}) | (
        set(recipe) - {"sources", "pretrain"})
    if unknown:
        raise DataError(f"{path}: unknown keys {sorted(unknown)}")
    return [str(s) for s in sources], PretrainConfig(**settings).validate()


def pretrain_general(sources: Sequence[str], config: PretrainConfig,
                     out: str | os.PathLike[str], progress: bool = False,
                     extra: dict[str, Any] | None = None,
                     resume: bool = False) -> vae_encoder.VaeEncoder:
    """Pretrain a VAE encoder on the training images of ``sources`` into ``out``; its
    metadata's ``data`` names each source with its image count and content SHA-256.
    ``resume`` continues from the checkpoint an interrupted run left in ``out``."""
    images, records = general_images(list(sources))
    info = {"sources": records, "split": "train", "labels": "unused", "samples": len(images),
            **(extra or {})}
    return pretrain(images, out, config, info, progress=progress, plots=False, resume=resume)
